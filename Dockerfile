# One image for the four services; compose.yaml picks the service with the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY services ./services
COPY linli ./linli
RUN pip install --no-cache-dir .
USER nobody
CMD ["python", "-m", "services.intake"]
