from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code.", examples=["invalid_request"])
    message: str = Field(description="What went wrong, for a person.")
    details: Any = Field(default=None, description="Field errors or other specifics.")


class ErrorReply(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def reply(self) -> dict[str, Any]:
        return ErrorReply(error=ErrorBody(code=self.code, message=self.message, details=self.details)).model_dump(
            mode="json"
        )
