"""`linli login`, and the people `linli up` creates: an administrator, a dispatcher, a bank clerk and a kiosk.

Credentials live in `<data>/credentials/` (files readable by their owner only): `admin-password` (the
identity service makes user `admin` from it), `people.txt` (the demo's users and the kiosk's secret) and
`token` (the token `linli login` saved, sent with every later command).
"""

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts import API
from linli.client import DEFAULT_DATA, CallFailed, print_refusal, Client, nats_url, token_file

DISTRICT = "beibei"


def credentials(data_dir: Path) -> Path:
    folder = data_dir / "credentials"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def admin_password_file(data_dir: Path) -> Path:
    """The first administrator's password, made on the first start and kept."""
    path = credentials(data_dir) / "admin-password"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(18) + "\n")
    return path


def open311_files(data_dir: Path) -> tuple[Path, Path]:
    """The Open311 clients' keys and the account the web relays their calls as (made by the demo)."""
    folder = credentials(data_dir)
    return folder / "open311-keys.tsv", folder / "open311-accounts.tsv"


def service_env(data_dir: Path) -> dict[str, str]:
    """What the services of `linli up` need: tokens required, where the administrator's password is, and
    where the web finds its Open311 clients."""
    keys, accounts = open311_files(data_dir)
    return {"LINLI_AUTH": os.environ.get("LINLI_AUTH") or "required",
            "IDENTITY_ADMIN_PASSWORD_FILE": str(admin_password_file(data_dir).resolve()),
            "LINLI_OPEN311_KEYS": str(keys.resolve()), "LINLI_OPEN311_ACCOUNTS": str(accounts.resolve())}


@dataclass
class People:
    admin: str
    dispatcher: str
    clerk: str
    kiosk: str


async def sign_in(client: Client, user: str, password: str) -> str:
    reply = await client.call(API.IDENTITY_LOGIN, {"user": user, "password": password}, token="")
    return str(reply["token"])


async def create_people(client: Client, data_dir: Path, district: str, kiosk_grid: str) -> People:
    """The demo's users, each with a new password, written to people.txt; their tokens for the demo."""
    admin = await sign_in(client, "admin", admin_password_file(data_dir).read_text().strip())
    lines = [f"# Made by `linli up`. Sign in with: linli login --user <user> --password-file <a file holding it>",
             f"admin\tadministrator\t*\t{admin_password_file(data_dir).read_text().strip()}"]
    tokens: dict[str, str] = {}
    for user, role in (("dispatcher", "dispatcher"), ("clerk", "bank_clerk")):
        password = secrets.token_urlsafe(12)
        await client.call(API.IDENTITY_OPERATOR_PUT,
                          {"user": user, "role": role, "district": district, "password": password}, token=admin)
        tokens[user] = await sign_in(client, user, password)
        lines.append(f"{user}\t{role}\t{district}\t{password}")
    device = f"kiosk-{kiosk_grid}"
    made = await client.call(API.IDENTITY_DEVICE_PUT, {"device_id": device, "district": district, "grid": kiosk_grid},
                             token=admin)
    kiosk = await client.call(API.IDENTITY_DEVICE_LOGIN, {"device_id": device, "secret": made["secret"]}, token="")
    lines.append(f"{device}\tkiosk\t{district}/{kiosk_grid}\t{made['secret']}")
    # Open311: one demo client's key, and the dispatcher account the web relays its calls as.
    relay, relay_password, api_key = f"open311-{district}", secrets.token_urlsafe(12), f"k-{secrets.token_hex(12)}"
    await client.call(API.IDENTITY_OPERATOR_PUT,
                      {"user": relay, "role": "dispatcher", "district": district, "password": relay_password}, token=admin)
    keys, accounts = open311_files(data_dir)
    write_private(accounts, f"# Made by `linli up`: the account the web relays Open311 calls as\n{relay}\t{relay_password}\n")
    write_private(keys, f"# api_key\tclient\tdistrict (made by `linli up`)\n{api_key}\tdemo client\t{district}\n")
    lines.append(f"{api_key}\topen311\t{district}\t(the Open311 demo client's api_key)")
    write_private(people_file(data_dir), "\n".join(lines) + "\n")
    return People(admin=admin, dispatcher=tokens["dispatcher"], clerk=tokens["clerk"], kiosk=str(kiosk["token"]))


def people_file(data_dir: Path) -> Path:
    return credentials(data_dir) / "people.txt"


# ---- linli login ----------------------------------------------------------------------------------------

def add_commands(subparsers: Any) -> None:
    login = subparsers.add_parser("login", help="sign in; later commands send the token")
    who = login.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="an operator's user name (asks for the password)")
    who.add_argument("--volunteer", help="a volunteer id (a one-time code is sent to the volunteer's phone)")
    who.add_argument("--device", help="a kiosk's device id (asks for its secret)")
    login.add_argument("--password-file", type=Path, help="read the password or device secret from this file")
    login.add_argument("--code", help="the one-time code, if already received (with --code-ref)")
    login.add_argument("--code-ref", help="the reference printed when the code was sent")
    login.set_defaults(run=run)
    logout = subparsers.add_parser("logout", help="forget the saved token")
    logout.set_defaults(run=run)


def secret(args: argparse.Namespace, prompt: str) -> str:
    if args.password_file:
        return str(args.password_file.read_text().strip())
    return getpass.getpass(prompt)


async def login(args: argparse.Namespace) -> dict[str, Any]:
    client = await Client.connect(nats_url(args.data), token="")
    try:
        if args.user:
            return await client.call(API.IDENTITY_LOGIN, {"user": args.user, "password": secret(args, "password: ")})
        if args.device:
            return await client.call(API.IDENTITY_DEVICE_LOGIN,
                                     {"device_id": args.device, "secret": secret(args, "device secret: ")})
        code_ref = args.code_ref
        if not (args.code and code_ref):
            sent = await client.call(API.IDENTITY_CODE_REQUEST, {"volunteer_id": args.volunteer})
            code_ref = sent["code_ref"]
            print(f"a code was sent to the volunteer's phone (reference {code_ref})", file=sys.stderr)
        code = args.code or input("code: ").strip()
        return await client.call(API.IDENTITY_CODE_VERIFY,
                                 {"volunteer_id": args.volunteer, "code_ref": code_ref, "code": code})
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    data_dir = getattr(args, "data", DEFAULT_DATA)
    path = token_file(data_dir)
    if args.command == "logout":
        path.unlink(missing_ok=True)
        print("signed out")
        return 0
    try:
        signed = asyncio.run(login(args))
    except CallFailed as exc:
        print_refusal(exc)
        return 1
    credentials(data_dir)
    write_private(path, signed["token"] + "\n")
    print(f"signed in as {signed['sub']} ({signed['role']}, {signed['district']}) until {signed['expires_at']}; "
          f"the token is in {path}")
    return 0
