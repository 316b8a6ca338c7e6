"""An Iterable project held in memory, with the semantics Iterable documents.

Pure: no HTTP, no clock reads (the caller passes `now`). Every rejection is an `ApiError`
carrying the status, `code` and `msg` Iterable would send. Choices where the reference marks
Iterable's behaviour unverified are listed in `UNVERIFIED_CHOICES`.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from consumer.events import EMAIL_PATTERN, PLATFORMS, USER_ID_PATTERN

ProjectType = Literal["email", "userId", "hybrid"]
PROJECT_TYPES: Final = ("email", "userId", "hybrid")
MAX_DEVICES: Final = 500
MAX_FIELDS: Final = 1000
PLACEHOLDER_DOMAIN: Final = "placeholder.email"

UNVERIFIED_CHOICES: Final = {
    "userId-only update in an email project without preferUserId": "400 UnknownUserIdError",
    "email-only call in a userID-based project": "400 BadParams",
    "GET byUserId of an unknown userId": "200 {} (flag --unknown-user-id error: 400 NotFound)",
    "disableDevice of an unknown token": "200 Success, nothing changes",
    "disableDevice naming an unknown user": "200 Success, nothing changes (like an unknown token)",
    "updateEmail whose current email is unknown": "400 UnknownEmailError",
    "bulkUpdate over 4 MB": "413 BatchTooLarge",
    "bulkUpdate list naming a refused identifier change": (
        "the offending email (lowercased when valid) or userId, even from dataFields"
    ),
    "mergeNestedObjects depth": "merges one level (the top-level object's keys)",
    "null in dataFields": "stored as null; does not delete the field",
    "device read-back keys": (
        "token, platform, applicationName, endpointEnabled + the device's dataFields"
    ),
    "registerDeviceToken of a token another profile holds": "both profiles keep it enabled",
    "type of an integer sent to a double field": "accepted (both are numbers)",
}

_EMAIL = re.compile(EMAIL_PATTERN)
_USER_ID = re.compile(USER_ID_PATTERN)


class ApiError(Exception):
    """A rejection as Iterable sends it: HTTP status and the `{msg, code, params}` envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        msg: str,
        params: dict[str, Any] | None = None,
        *,
        offending: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.params = params
        # ("Emails" | "UserIds", value): the identifier a bulkUpdate failure list names.
        self.offending = offending


@dataclass
class User:
    email: str | None
    user_id: str | None
    data_fields: dict[str, Any] = field(default_factory=dict)
    signup_date: str = ""
    profile_updated_at: str = ""

    @property
    def devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = self.data_fields.setdefault("devices", [])
        return devices

    def as_json(self) -> dict[str, Any]:
        user: dict[str, Any] = {}
        if self.email is not None:
            user["email"] = self.email
        if self.user_id is not None:
            user["userId"] = self.user_id
        user["dataFields"] = copy.deepcopy(self.data_fields)
        user["signupDate"] = self.signup_date
        user["profileUpdatedAt"] = self.profile_updated_at
        return user


@dataclass
class Identity:
    """The identifiers one request names, already validated."""

    email: str | None
    user_id: str | None
    prefer_user_id: bool = False


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S +00:00")


def _type_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array"


def _compatible(expected: str, incoming: str) -> bool:
    return expected == incoming or (expected == "double" and incoming == "long")


class Project:
    """One Iterable project: its users, its field types and its push integrations."""

    def __init__(
        self,
        project_type: ProjectType = "hybrid",
        *,
        push_integrations: Iterable[tuple[str, str]] | None = None,
        unknown_user_id: Literal["empty", "error"] = "empty",
        max_fields: int = MAX_FIELDS,
    ) -> None:
        self.project_type = project_type
        self.push_integrations = None if push_integrations is None else set(push_integrations)
        self.unknown_user_id = unknown_user_id
        self.max_fields = max_fields
        self.users: list[User] = []
        self.field_types: dict[str, str] = {}
        self._by_email: dict[str, User] = {}

    # -- identity -------------------------------------------------------------------------

    def identity(self, body: dict[str, Any], *, email_key: str = "email") -> Identity:
        """Validate the identifiers a request carries."""
        email = body.get(email_key)
        user_id = body.get("userId")
        if email is not None:
            email = self.valid_email(email, label=email_key)
        if user_id is not None:
            user_id = self.valid_user_id(user_id)
        return Identity(email, user_id, bool(body.get("preferUserId", False)))

    @staticmethod
    def valid_email(email: str, label: str = "email") -> str:
        normalised = email.strip().lower()
        if len(normalised) > 254 or not _EMAIL.match(normalised):
            raise ApiError(
                400,
                "InvalidEmailAddressError",
                f"Invalid {label}: {email}",
                offending=("Emails", email),
            )
        return normalised

    @staticmethod
    def valid_user_id(user_id: str) -> str:
        if not _USER_ID.match(user_id):
            raise ApiError(
                400,
                "InvalidUserIdError",
                f"Invalid userId: {user_id}",
                offending=("UserIds", user_id),
            )
        return user_id

    def find(self, identity: Identity) -> User | None:
        """The profile the identifiers point at, by the project type's precedence."""
        by_email = self._by_email.get(identity.email) if identity.email else None
        by_user_id = self.by_user_id(identity.user_id) if identity.user_id else None
        if self.project_type == "email":
            return by_email if identity.email else by_user_id
        return by_user_id if identity.user_id else by_email

    def by_email(self, email: str) -> User | None:
        return self._by_email.get(email.strip().lower())

    def by_user_id(self, user_id: str) -> User | None:
        return next((u for u in self.users if u.user_id == user_id), None)

    def resolve(self, identity: Identity, now: float) -> User:
        """Find the profile, creating it where Iterable would; apply identifier updates."""
        self._require_identifier(identity)
        user = self.find(identity)
        if user is None:
            return self._create(identity, now)
        if self.project_type == "email":
            if identity.email and identity.user_id:
                user.user_id = identity.user_id  # email wins; userId is overwritten
        elif identity.user_id and identity.email and user.email != identity.email:
            self._change_email(user, identity.email)
        return user

    def _require_identifier(self, identity: Identity) -> None:
        if identity.email is None and identity.user_id is None:
            raise ApiError(400, "BadParams", "Either email or userId must be provided")
        if self.project_type == "userId" and identity.user_id is None:
            raise ApiError(400, "BadParams", "userId is required in a userID-based project")

    def _create(self, identity: Identity, now: float) -> User:
        email = identity.email
        if self.project_type == "email" and email is None:
            if not identity.prefer_user_id:
                raise ApiError(
                    400, "UnknownUserIdError", f"No user exists with userId {identity.user_id}"
                )
            email = f"{uuid.uuid4().hex}@{PLACEHOLDER_DOMAIN}"
        if self.project_type == "hybrid" and email is not None and email in self._by_email:
            owner = self._by_email[email]
            if owner.user_id is None:
                owner.user_id = identity.user_id  # claim the email-only profile
                return owner
            raise _email_conflict(email)
        stamp = _timestamp(now)
        user = User(email, identity.user_id, signup_date=stamp, profile_updated_at=stamp)
        self.users.append(user)
        if email is not None:
            self._by_email[email] = user
        return user

    def _change_email(self, user: User, new_email: str) -> None:
        if self.project_type != "userId" and new_email in self._by_email:
            raise _email_conflict(new_email)
        if user.email is not None:
            self._by_email.pop(user.email, None)
        user.email = new_email
        if self.project_type != "userId":
            self._by_email[new_email] = user

    # -- users/update and bulkUpdate ------------------------------------------------------

    def update(self, body: dict[str, Any], now: float) -> str:
        """POST /api/users/update; returns the success message."""
        identity = self.identity(body)
        fields = dict(body.get("dataFields") or {})
        fields.pop("devices", None)  # Iterable-managed
        new_email = fields.pop("email", None)
        new_user_id = fields.pop("userId", None)
        if isinstance(new_email, str):
            if self.project_type == "email":
                raise ApiError(400, "BadParams", "Use updateEmail to change an email here")
            new_email = self.valid_email(new_email)
        if isinstance(new_user_id, str):
            new_user_id = self.valid_user_id(new_user_id)
        self.check_types(fields)
        target = self.find(identity) if self._identified(identity) else None
        self._check_identifier_change(identity, target, new_email, new_user_id)
        existed = target is not None
        user = self.resolve(identity, now)
        if isinstance(new_email, str) and new_email != user.email:
            self._change_email(user, new_email)
        if isinstance(new_user_id, str) and new_user_id != user.user_id:
            self._change_user_id(user, new_user_id)
        self._merge(user, fields, bool(body.get("mergeNestedObjects", False)), now)
        return "User updated" if existed else "User created"

    def _check_identifier_change(
        self, identity: Identity, target: User | None, new_email: Any, new_user_id: Any
    ) -> None:
        """Refuse a dataFields identifier another profile holds before anything changes."""
        if isinstance(new_email, str) and new_email != identity.email:
            owner = self._by_email.get(new_email) if self.project_type != "userId" else None
            if owner is not None and owner is not target:
                raise _email_conflict(new_email)
        if isinstance(new_user_id, str) and self.project_type != "email":
            other = self.by_user_id(new_user_id)
            if other is not None and other is not target:
                raise _user_id_conflict(new_user_id)

    def _identified(self, identity: Identity) -> bool:
        return identity.email is not None or identity.user_id is not None

    def _change_user_id(self, user: User, user_id: str) -> None:
        other = self.by_user_id(user_id)
        if self.project_type != "email" and other is not None and other is not user:
            raise _user_id_conflict(user_id)
        user.user_id = user_id

    def check_types(self, fields: dict[str, Any], prefix: str = "") -> None:
        """Reject the request if a field's type differs from the project's first-seen type."""
        errors: dict[str, Any] = {}
        self._collect_type_errors(fields, prefix, errors)
        if errors:
            raise ApiError(
                400,
                "RequestFieldsTypesMismatched",
                "The request does not have the same data types as the project's fields",
                {"validationErrors": errors},
            )
        new = {path for path in self._paths(fields, prefix) if path not in self.field_types}
        if len(self.field_types) + len(new) > self.max_fields:
            raise ApiError(
                400, "UniqueFieldsLimitExceeded", f"Over the limit of {self.max_fields} fields"
            )

    def _collect_type_errors(
        self, fields: dict[str, Any], prefix: str, errors: dict[str, Any]
    ) -> None:
        for key, value in fields.items():
            path = f"{prefix}{key}"
            incoming = _type_of(value)
            expected = self.field_types.get(path)
            if (
                incoming is not None
                and expected is not None
                and not _compatible(expected, incoming)
            ):
                errors[path] = {
                    "incomingTypes": [incoming],
                    "expectedType": expected,
                    "category": "user",
                    "offendingValue": str(value)[:100],
                    "_type": "UnexpectedType",
                }
            if isinstance(value, dict):
                self._collect_type_errors(value, f"{path}.", errors)

    def _paths(self, fields: dict[str, Any], prefix: str) -> Iterable[str]:
        for key, value in fields.items():
            yield f"{prefix}{key}"
            if isinstance(value, dict):
                yield from self._paths(value, f"{prefix}{key}.")

    def _record_types(self, fields: dict[str, Any], prefix: str = "") -> None:
        for key, value in fields.items():
            kind = _type_of(value)
            if kind is not None:
                self.field_types.setdefault(f"{prefix}{key}", kind)
            if isinstance(value, dict):
                self._record_types(value, f"{prefix}{key}.")

    def _merge(self, user: User, fields: dict[str, Any], nested: bool, now: float) -> None:
        self._record_types(fields)
        for key, value in fields.items():
            current = user.data_fields.get(key)
            if nested and isinstance(value, dict) and isinstance(current, dict):
                user.data_fields[key] = {**current, **copy.deepcopy(value)}
            else:
                user.data_fields[key] = copy.deepcopy(value)
        user.profile_updated_at = _timestamp(now)

    def bulk_update(self, body: dict[str, Any], now: float) -> dict[str, Any]:
        """POST /api/users/bulkUpdate: per-record outcomes keyed by identifier."""
        failed: dict[str, list[str]] = {
            key: []
            for key in (
                "conflictEmails",
                "conflictUserIds",
                "forgottenEmails",
                "forgottenUserIds",
                "invalidDataEmails",
                "invalidDataUserIds",
                "invalidEmails",
                "invalidUserIds",
                "notFoundEmails",
                "notFoundUserIds",
            )
        }
        success = 0
        for record in body.get("users", []):
            try:
                self.update(record, now)
            except ApiError as exc:
                bucket, identifier = _bulk_failure(exc, record)
                failed[bucket].append(identifier)
            else:
                success += 1
        fail_count = sum(len(v) for v in failed.values())
        return {
            "successCount": success,
            "failCount": fail_count,
            "invalidEmails": failed["invalidEmails"],
            "invalidUserIds": failed["invalidUserIds"],
            "filteredOutFields": [],
            "createdFields": [],
            "failedUpdates": failed,
        }

    # -- devices --------------------------------------------------------------------------

    def register_device(self, body: dict[str, Any], now: float) -> None:
        """POST /api/users/registerDeviceToken."""
        device = body["device"]
        token, platform, app = device["token"], device["platform"], device["applicationName"]
        if platform not in PLATFORMS:
            raise ApiError(400, "BadParams", f"Unknown platform {platform}")
        if self.push_integrations is not None and (app, platform) not in self.push_integrations:
            raise ApiError(
                400,
                "BadParams",
                f"Unable to find a push integration set up for application {app} on {platform}",
            )
        user = self.resolve(self.identity(body), now)
        extra = dict(device.get("dataFields") or {})
        existing = next((d for d in user.devices if d["token"] == token), None)
        if existing is None:
            if len(user.devices) >= MAX_DEVICES:
                raise ApiError(
                    400, "BadParams", f"User has reached the limit of {MAX_DEVICES} devices"
                )
            existing = {"token": token}
            user.devices.append(existing)
        existing.update(extra)
        existing.update(platform=platform, applicationName=app, endpointEnabled=True)
        user.profile_updated_at = _timestamp(now)

    def disable_device(self, body: dict[str, Any], now: float) -> None:
        """POST /api/users/disableDevice: on one profile, or every profile with the token."""
        token = body["token"]
        identity = self.identity(body)
        if self._identified(identity):
            user = self.find(identity)
            targets = [] if user is None else [user]
        else:
            targets = [u for u in self.users if any(d["token"] == token for d in u.devices)]
        for user in targets:
            for device in user.devices:
                if device["token"] == token:
                    device["endpointEnabled"] = False
                    user.profile_updated_at = _timestamp(now)

    # -- updateEmail, reads, deletes ------------------------------------------------------

    def update_email(self, body: dict[str, Any], now: float) -> None:
        """POST /api/users/updateEmail: currentEmail wins over currentUserId."""
        new_email = self.valid_email(body["newEmail"], label="newEmail")
        current_email = body.get("currentEmail")
        if current_email is not None:
            user = self.by_email(self.valid_email(current_email, label="currentEmail"))
            missing = f"No user exists with email {current_email}"
        elif body.get("currentUserId") is not None:
            user = self.by_user_id(body["currentUserId"])
            missing = f"No user exists with userId {body['currentUserId']}"
        else:
            raise ApiError(400, "BadParams", "currentEmail or currentUserId is required")
        if user is None:
            raise ApiError(400, "UnknownEmailError", missing)
        if new_email in self._by_email:
            raise ApiError(409, "EmailAlreadyExists", f"Email {new_email} already exists")
        self._change_email(user, new_email)
        user.profile_updated_at = _timestamp(now)

    def get_by_email(self, email: str) -> dict[str, Any]:
        user = self.by_email(email)
        return {} if user is None else {"user": user.as_json()}

    def get_by_user_id(self, user_id: str) -> dict[str, Any]:
        user = self.by_user_id(user_id)
        if user is None and self.unknown_user_id == "error":
            raise ApiError(400, "NotFound", "User not found")
        return {} if user is None else {"user": user.as_json()}

    def delete_by_email(self, email: str) -> str:
        if self.project_type == "userId":
            raise ApiError(400, "BadParams", "Delete by email is not supported in this project")
        user = self.by_email(email)
        if user is None:
            raise ApiError(400, "BadParams", f"User does not exist. Email: {email} UserId: ")
        self._remove([user])
        return f"All users associated with {email} were successfully deleted"

    def delete_by_user_id(self, user_id: str) -> str:
        users = [u for u in self.users if u.user_id == user_id]
        if not users:
            raise ApiError(400, "BadParams", f"User does not exist. Email:  UserId: {user_id}")
        self._remove(users)
        return f"All users associated with {user_id} were successfully deleted"

    def _remove(self, users: list[User]) -> None:
        for user in users:
            self.users.remove(user)
            if user.email is not None:
                self._by_email.pop(user.email, None)


def _email_conflict(email: str) -> ApiError:
    return ApiError(
        409, "EmailAlreadyExists", f"Email {email} already exists", offending=("Emails", email)
    )


def _user_id_conflict(user_id: str) -> ApiError:
    return ApiError(
        409,
        "UserIdAlreadyExists",
        f"userId {user_id} already exists",
        offending=("UserIds", user_id),
    )


def _bulk_failure(error: ApiError, record: dict[str, Any]) -> tuple[str, str]:
    """Which `failedUpdates` list a rejected record lands in, and under which identifier:
    the offending one where there is one (possibly from dataFields), else the record's."""
    code = error.code
    email, user_id = record.get("email"), record.get("userId")
    key = "Emails" if isinstance(email, str) else "UserIds"
    identifier = str(email if key == "Emails" else user_id)
    if error.offending is not None:
        key, identifier = error.offending
    if code in ("InvalidEmailAddressError", "InvalidUserIdError"):
        return f"invalid{key}", identifier
    if code == "UnknownUserIdError":
        return "notFoundUserIds", str(user_id)
    if code in ("EmailAlreadyExists", "UserIdAlreadyExists"):
        return f"conflict{key}", identifier
    return f"invalidData{key}", identifier
