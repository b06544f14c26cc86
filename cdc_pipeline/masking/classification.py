"""Default PII/PHI classification of columns by their name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdc_pipeline.config.models import MaskAction


@dataclass(frozen=True)
class PiiClass:
    name: str
    action: MaskAction
    # Each alternative is a sequence of name tokens that must appear consecutively.
    token_sequences: tuple[tuple[str, ...], ...]


# Order matters: 'email_address' is an email, 'ip_address' an IP, before 'address' matches either.
# Identifiers get a deterministic token so joins and distinct counts still work; free text and
# dates of birth, which are useless as join keys, are redacted or nulled.
PII_CLASSES: tuple[PiiClass, ...] = (
    PiiClass("email", "token", (("email",), ("e", "mail"), ("mail",))),
    PiiClass("ip_address", "token", (("ip",), ("ipv4",), ("ipv6",), ("remote", "addr"))),
    PiiClass("phone", "token", (("phone",), ("mobile",), ("tel",), ("telephone",), ("msisdn",), ("fax",))),
    PiiClass("ssn", "token", (("ssn",), ("social", "security"), ("national", "id"))),
    PiiClass(
        "card_number",
        "token",
        (("card", "number"), ("card", "no"), ("cc", "number"), ("credit", "card"), ("pan",), ("card", "num")),
    ),
    PiiClass(
        "birth_date", "null", (("birth", "date"), ("birthdate",), ("dob",), ("date", "of", "birth"), ("birthday",))
    ),
    PiiClass("medical_record", "token", (("mrn",), ("medical", "record"))),
    PiiClass("patient_id", "token", (("patient", "id"), ("patientid",))),
    PiiClass("diagnosis", "redact", (("diagnosis",), ("diagnoses",), ("icd",), ("icd10",))),
    PiiClass("prescription", "redact", (("prescription",), ("prescriptions",), ("rx",), ("medication",))),
    PiiClass("address", "redact", (("address",), ("street",), ("addr",), ("address", "line"))),
)

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_VOCABULARY = frozenset(
    word for pii_class in PII_CLASSES for sequence in pii_class.token_sequences for word in sequence
)
# Words distinctive enough to be recognised at the end of a run-together name ('customeremail',
# 'homephone', 'billingaddress'); shorter or common words ('mail', 'ip', 'pan', 'tel') are not, or
# 'mailbox', 'zip', 'company' and 'hotel' would be masked.
_RUN_TOGETHER_WORDS = ("email", "phone", "address", "birthdate", "birthday", "ssn")
# Abbreviations read as the word they stand for ('birth_dt').
_ABBREVIATIONS = {"dt": "date"}


def name_tokens(column_name: str) -> tuple[str, ...]:
    """The words of a column name, lower case: split at separators and camelCase, plurals of the
    classes' words made singular, a run-together distinctive word split off, abbreviations spelled out."""
    spaced = _CAMEL_BOUNDARY.sub("_", column_name)
    tokens: list[str] = []
    for token in re.split(r"[^A-Za-z0-9]+", spaced.lower()):
        if token:
            tokens.extend(_normalised(token))
    return tuple(tokens)


def _normalised(token: str) -> tuple[str, ...]:
    token = _ABBREVIATIONS.get(token, token)
    if token in _VOCABULARY:
        return (token,)
    singular = _singular(token)
    if singular is not None:
        return (singular,)
    for word in _RUN_TOGETHER_WORDS:
        for ending in (word, word + "s", word + "es"):
            if token.endswith(ending) and len(token) > len(ending):
                return (token[: -len(ending)], word)
    return (token,)


def _singular(token: str) -> str | None:
    """The vocabulary word `token` is the plural of ('emails', 'addresses'), if any."""
    for suffix in ("es", "s"):
        if token.endswith(suffix) and token[: -len(suffix)] in _VOCABULARY:
            return token[: -len(suffix)]
    return None


def _contains(tokens: tuple[str, ...], sequence: tuple[str, ...]) -> bool:
    width = len(sequence)
    return any(tokens[i : i + width] == sequence for i in range(len(tokens) - width + 1))


def classify_column(column_name: str) -> PiiClass | None:
    """The PII/PHI class a column's name suggests, or None."""
    tokens = name_tokens(column_name)
    for pii_class in PII_CLASSES:
        if any(_contains(tokens, sequence) for sequence in pii_class.token_sequences):
            return pii_class
    return None
