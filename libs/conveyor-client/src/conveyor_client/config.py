"""Where the client connects: arguments win, then CONVEYOR_URL / CONVEYOR_API_KEY."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientSettings(BaseSettings):
    """The client's environment. These are the caller's variables, not the services' settings."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    url: str = Field(default=DEFAULT_URL, description="The gateway's base URL.")
    api_key: SecretStr | None = Field(
        default=None, description="An API key (`cnv_...`), sent as `Authorization: Bearer`."
    )
