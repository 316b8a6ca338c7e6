"""Events to Iterable calls, per project type (SPEC §4). Pure.

Every identifier the event has goes to `users/update`; device calls get exactly one, chosen
by the project's precedence; an email change becomes `updateEmail` + update in email-based
projects and a single update carrying `dataFields.email` elsewhere. With exclusive device
token ownership a registration is a handoff: `disableDevice` with the token alone (every
profile), then `registerDeviceToken` for its profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from consumer.endpoints import Endpoint
from consumer.events import DeviceRegistered, Event, PushPermissionRevoked, UserChanged

ProjectType = Literal["email", "userId", "hybrid"]
PROJECT_TYPES: Final = ("email", "userId", "hybrid")
# shared: a token may stay enabled on several profiles (Iterable allows it); exclusive: the
# newest registration owns it, as Iterable's mobile SDKs do when the signed-in user changes.
DeviceOwnership = Literal["shared", "exclusive"]


@dataclass(frozen=True, slots=True)
class Call:
    """One Iterable request; `identifiers` are redacted from any error it causes."""

    endpoint: Endpoint
    payload: dict[str, Any]
    identifiers: tuple[str, ...]
    # For updateEmail: (old, new). A replayed change whose old email is gone and whose new
    # email exists has already been applied.
    email_change: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Translator:
    project_type: ProjectType = "hybrid"
    prefer_user_id: bool = True
    device_ownership: DeviceOwnership = "shared"

    @property
    def exclusive(self) -> bool:
        """Whether a registration first disables its token on every profile."""
        return self.device_ownership == "exclusive"

    def calls(self, event: Event) -> list[Call]:
        data = event.data
        if isinstance(data, UserChanged):
            return self._user_changed(data)
        if isinstance(data, DeviceRegistered):
            if self.exclusive:
                everywhere = {"token": data.device.token}  # no identifier: every profile
                ids = _ids(data.email, data.userId)
                return [Call(Endpoint.DISABLE_DEVICE, everywhere, ids), self.register(data)]
            return [self.register(data)]
        return [self._revoke(data)]

    def _user_changed(self, data: UserChanged) -> list[Call]:
        payload: dict[str, Any] = {}
        if data.email is not None:
            payload["email"] = data.email
        if data.userId is not None:
            payload["userId"] = data.userId
        fields = dict(data.dataFields)
        calls: list[Call] = []
        ids = _ids(data.email, data.userId, data.previousEmail)
        if data.previousEmail is not None and data.previousEmail != data.email:
            assert data.email is not None  # noqa: S101 - the model requires it with previousEmail
            if self.project_type == "email":
                calls.append(
                    Call(
                        Endpoint.UPDATE_EMAIL,
                        {"currentEmail": data.previousEmail, "newEmail": data.email},
                        ids,
                        email_change=(data.previousEmail, data.email),
                    )
                )
            elif data.userId is not None:
                # Keyed by userId; the new email travels in dataFields (Iterable's docs).
                payload.pop("email")
                fields["email"] = data.email
            else:
                # No userId: identify by the old email and move it to the new one.
                payload["email"] = data.previousEmail
                fields["email"] = data.email
        payload["dataFields"] = fields
        payload["mergeNestedObjects"] = data.mergeNestedObjects
        prefer = data.preferUserId
        if prefer is None and self.project_type == "email" and data.email is None:
            prefer = self.prefer_user_id
        if prefer is not None:
            payload["preferUserId"] = prefer
        calls.append(Call(Endpoint.UPDATE, payload, ids))
        return calls

    def device_identifier(self, email: str | None, user_id: str | None) -> tuple[str, str] | None:
        """The one identifier a device call sends: ("email"|"userId", value), or None."""
        if self.project_type == "email":
            order = (("email", email), ("userId", user_id))
        else:
            order = (("userId", user_id), ("email", email))
        return next(((key, value) for key, value in order if value is not None), None)

    def register(self, data: DeviceRegistered) -> Call:
        """The `registerDeviceToken` call alone (a handoff's second call)."""
        identifier = self.device_identifier(data.email, data.userId)
        assert identifier is not None  # noqa: S101 - the model requires email or userId
        device: dict[str, Any] = {
            "token": data.device.token,
            "platform": data.device.platform,
            "applicationName": data.device.applicationName,
        }
        if data.device.dataFields:
            device["dataFields"] = dict(data.device.dataFields)
        payload: dict[str, Any] = {identifier[0]: identifier[1], "device": device}
        if identifier[0] == "userId" and self.project_type == "email":
            payload["preferUserId"] = True
        return Call(Endpoint.REGISTER_DEVICE, payload, _ids(data.email, data.userId))

    def _revoke(self, data: PushPermissionRevoked) -> Call:
        payload: dict[str, Any] = {"token": data.token}
        identifier = self.device_identifier(data.email, data.userId)
        if identifier is not None:
            payload[identifier[0]] = identifier[1]
        return Call(Endpoint.DISABLE_DEVICE, payload, _ids(data.email, data.userId))


def _ids(*values: str | None) -> tuple[str, ...]:
    return tuple(v for v in values if v)
