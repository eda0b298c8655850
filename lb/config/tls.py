"""TLS in the config: a listener's `tls` (certificates chosen by SNI, client certificates)
and a pool's `tls` (lb to its servers). The checks that read the files they name live in
`lb.config.tls_checks`.

A file named here is taken relative to the config file's directory (see `_config_relative`).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator

from lb.config.base import HEADER_NAME, Duration, Model


def _config_relative(path: str, info: ValidationInfo) -> str:
    """A file named in the config is relative to the config file's directory (when loaded from
    a file; `load_config` passes it as `base_dir`), so `lb check` and `lb run` agree from any
    working directory."""
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if not path:
        raise ValueError("must name a file")
    return os.path.join(base, path) if base and not os.path.isabs(path) else path


ConfigFile = Annotated[str, AfterValidator(_config_relative)]


def _tls_version(v: Any) -> Any:
    # `min_version: 1.2` unquoted is a YAML float; accept it as the string it was meant to be.
    return str(v) if isinstance(v, float) else v


class Certificate(Model):
    """One certificate chain (PEM, leaf first) and its key; `names` are the server names it is
    chosen for by SNI (exact or "*.example.com"); omitted: the DNS names the certificate holds."""

    cert: ConfigFile
    key: ConfigFile
    names: list[str] | None = None

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [n.lower().rstrip(".") for n in v]


class ListenerTlsConfig(Model):
    certificates: Annotated[list[Certificate], Field(min_length=1)]
    min_version: Annotated[Literal["1.2", "1.3"], BeforeValidator(_tls_version)] = "1.2"
    client_ca: ConfigFile | None = None  # verify client certificates (mTLS) against these CAs
    client_cert: Literal["required", "optional"] | None = None  # [required when client_ca is set]
    client_subject_header: str | None = None  # the verified client subject goes to servers here
    handshake_timeout: Duration = 10.0  # a client that has not finished its handshake is dropped
    # Key-exchange groups offered, OpenSSL names [X25519, P-256, P-384: lb.proxy.tls.groups].
    groups: Annotated[list[str], Field(min_length=1)] | None = None

    @field_validator("client_subject_header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid header name, e.g. x-client-subject")
        return v


class PoolTls(Model):
    """TLS from lb to the pool's servers."""

    verify: bool = True  # check the server's certificate chain and name
    ca: ConfigFile | None = None  # trust these CAs instead of the system's
    sni: str | None = None  # the name sent and verified [the server's address host]
