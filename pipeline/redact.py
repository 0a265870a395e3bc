"""Keep credentials out of everything the job writes or prints: configs, row errors, URIs.

One set of rules, used wherever a config is dumped or a message or URI reaches an output:

- a mapping value whose key names a secret (key, secret, token, password, credential, session,
  authorization, signature, ...; at any depth, any type) is replaced by ``<redacted>``;
- a URL loses its userinfo (``user:password@``) and the values of query parameters that carry
  credentials (presigned S3/GCS URLs, Azure SAS ``sig``, ``access_token=``, ...);
- free text (exception messages from fsspec, s3fs, aiohttp, ...) gets the URL rule for every URL
  in it, ``name=value`` / ``'name': 'value'`` pairs with a secret name, ``Bearer``/``Basic``
  credentials and AWS access key ids removed, and every secret value the caller knows of
  (``secret_values``: from storage_options and the environment) replaced wherever it appears.

Everything else is kept, so a redacted config still says which endpoint, bucket and options a
run used.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"

# Whole words of a key (split at _, -, ., camelCase) that make it a secret. Plural "tokens" is
# not among them: max_new_tokens is a length, not a credential.
_SECRET_WORDS = frozenset(
    {
        "key", "secret", "token", "password", "passwd", "pwd", "pass", "passphrase", "credential",
        "credentials", "auth", "authorization", "session", "sig", "signature", "cookie", "bearer",
    }
)  # fmt: skip
# Run-together spellings (apikey, accessKeyId lower-cased, AWSSecretKey, ...).
_SECRET_PARTS = (
    "secret", "password", "passwd", "credential", "apikey", "accesskey", "privatekey", "accountkey",
    "sastoken", "authtoken", "accesstoken", "sessiontoken", "connectionstring", "authorization",
    "signature",
)  # fmt: skip

# Values shorter than this are not replaced by literal match in free text: a short test key like
# "x" would otherwise eat letters out of every message.
_MIN_LITERAL = 8

# Environment variables whose names look secret but hold paths and addresses (PWD is the working
# directory, not a password): replacing those in messages would only hide where things are.
_NOT_SECRET_ENV = re.compile(r"PWD|OLDPWD|.*_SOCK|.*_ADDRESS|XDG_SESSION_.*|SESSION_MANAGER")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*)://([^\s'\"<>`]*[^\s'\"<>`.,;:)\]}])")
# A whole string that is a URL may hold anything after the scheme (spaces included).
_URL_START = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://(.*)", re.DOTALL)
# As for URLs, a value does not end in punctuation: "sig=abc: not found" keeps its colon.
_PAIR = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9_.\-]*)=(?P<value>[^\s&'\",;)}\]]*[^\s&'\",;)}\]:.])")
_QUOTED_PAIR = re.compile(r"(?P<q>['\"])(?P<name>[^'\"]{1,64})(?P=q)(?P<sep>\s*:\s*)(?P<vq>['\"])(?P<value>.*?)(?P=vq)")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|token)\s+[A-Za-z0-9._~+/\-]{8,}=*", re.IGNORECASE)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


@functools.lru_cache(maxsize=4096)  # a pure function of the name, asked per batch for every environment variable
def is_secret_key(name: str) -> bool:
    """Whether a mapping key, query parameter or environment variable names a credential."""
    words = re.findall(r"[a-z0-9]+", _CAMEL.sub(r"\1_\2", str(name)).lower())
    if _SECRET_WORDS.intersection(words):
        return True
    joined = "".join(words)
    return any(part in joined for part in _SECRET_PARTS)


def redact_url(url: str, known: Iterable[str] = ()) -> str:
    """``url`` without userinfo and without the values of credential query parameters (a string
    that is not a ``scheme://`` URL keeps its form), and without any of the ``known`` secrets."""
    match = _URL_START.match(url)
    return _replace_known(_redact_url_parts(match.group(1), match.group(2)) if match else url, known)


def _replace_known(text: str, known: Iterable[str]) -> str:
    for value in sorted({v for v in known if len(v) >= _MIN_LITERAL}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def _redact_url_parts(scheme: str, rest: str) -> str:
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = REDACTED + "@" + authority.rpartition("@")[2]
    path, qmark, query = tail.partition("?")
    query, hash_, fragment = query.partition("#")
    if not qmark:
        path, hash_, fragment = tail.partition("#")
    return f"{scheme}://{authority}{path}{qmark}{_redact_params(query)}{hash_}{_redact_params(fragment)}"


def _redact_params(params: str) -> str:
    if "=" not in params:
        return params
    out = []
    for item in params.split("&"):
        name, eq, _ = item.partition("=")
        out.append(f"{name}={REDACTED}" if eq and is_secret_key(_unquote(name)) else item)
    return "&".join(out)


def _unquote(text: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(text)


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """Free text (an exception message, a log line) with every credential the rules find removed.

    ``known``: secret values to replace wherever they appear (see ``secret_values``)."""
    if not text:
        return text
    text = _replace_known(text, known)
    text = _URL.sub(lambda m: _redact_url_parts(m.group(1), m.group(2)), text)
    text = _PAIR.sub(lambda m: f"{m['name']}={REDACTED}" if is_secret_key(m["name"]) else m.group(0), text)
    text = _QUOTED_PAIR.sub(
        lambda m: f"{m['q']}{m['name']}{m['q']}{m['sep']}{m['vq']}{REDACTED}{m['vq']}"
        if is_secret_key(m["name"])
        else m.group(0),
        text,
    )
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _AWS_KEY_ID.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """A JSON-like structure (a dumped config, metrics) with secret-named values replaced and
    every string passed through ``redact_text``. Unset secrets (None, "", {}) stay as they are:
    seeing that none was given is useful, and reveals nothing."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if is_secret_key(k) and value[k] not in (None, "", {}, []) else redact(value[k]))
            for k in value
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def secret_values(*sources: Any, environ: bool = True) -> set[str]:
    """Every credential string in ``sources`` (mappings such as storage_options, URLs, nested
    lists), plus, with ``environ``, the values of secret-named environment variables
    (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, HF_TOKEN, ...): the literals ``redact_text``
    replaces wherever they turn up, whatever the message looks like."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or is_secret_key(k))
        elif isinstance(value, (list, tuple, set)):
            for v in value:
                walk(v, secret)
        elif isinstance(value, str):
            if secret:
                found.add(value)
            for m in _URL.finditer(value):
                authority = re.split(r"[/?#]", m.group(2), maxsplit=1)[0]
                if "@" in authority:
                    userinfo = authority.rpartition("@")[0]
                    found.update(p for p in (userinfo, *userinfo.split(":", 1)) if p)
                query = m.group(2).partition("?")[2].partition("#")[0]
                for item in query.split("&"):
                    name, eq, v = item.partition("=")
                    if eq and is_secret_key(_unquote(name)):
                        found.update({v, _unquote(v)})
        elif value is not None and secret and not isinstance(value, bool):
            found.add(str(value))

    for source in sources:
        walk(source, False)
    if environ:
        walk({k: v for k, v in os.environ.items() if is_secret_key(k) and not _NOT_SECRET_ENV.fullmatch(k)}, True)
    return {v for v in found if len(v) >= _MIN_LITERAL}
