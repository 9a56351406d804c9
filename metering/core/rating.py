"""Rating: a month of an account's usage priced by the price book versions in force.

Pure (standard library only). Amounts are exact rationals (Fraction) until the book's
rounding policy turns them into Decimals: 1 s at 0.05 per hour is 1/72000, which no
Decimal holds, and rounding that exact value is the only way each mode rounds right.

Model:
- A price book version is in force from its valid_from (on an hour) until the next
  version's; of two with the same valid_from the later load wins.
- A usage key (entity, offering, unit) is priced by the account's override if one
  matches, else by the book's price; a rule naming the offering beats one that omits it.
- Tiers are graduated per account, month and rule scope (entity, offering as the rule
  names it, unit): hour by hour in time order, each hour's quantity is priced by the
  tiers its position in the month's running total falls in, so a price change mid-month
  keeps the position reached under the old version.
- Usage no rule prices is listed as unpriced, never priced 0.
- Rounding `per = "line"` rounds each invoice line; `per = "invoice"` rounds the total
  only. The version in force at the month's start (else the month's first) decides it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

MODES = ("half-even", "half-up", "up", "down")
ROUND_PER = ("line", "invoice")
# `per` of a price: how many of the usage unit one priced unit holds.
SCALES: dict[str, dict[str, int]] = {
    "second": {"second": 1, "minute": 60, "hour": 3600, "day": 86_400},
    "byte": {
        "byte": 1,
        "kB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KiB": 2**10,
        "MiB": 2**20,
        "GiB": 2**30,
        "TiB": 2**40,
    },
}
# Amounts are stored as DECIMAL(30,10); a finer rounding step would not fit.
MAX_PLACES = 10
# Lines of an invoice rounded as a whole show their exact amount to this many places.
SHOWN = Decimal(1).scaleb(-MAX_PLACES)
HOUR_MS = 3_600_000
PRICE = "price"
OVERRIDE = "override"

BOOK_KEYS = {"currency", "rounding", "price", "override", "valid_from"}
ROUNDING_KEYS = {"precision", "mode", "per"}
PRICE_KEYS = {"entity", "offering", "unit", "per", "price", "tiers"}
OVERRIDE_KEYS = PRICE_KEYS | {"account"}
TIER_KEYS = {"up_to", "price"}


class BookError(ValueError):
    """A price book that cannot be loaded; the message names the entry and the key."""


@dataclass(frozen=True)
class Rounding:
    step: Decimal  # amounts are multiples of it (0.01, or 0.05 for Swiss francs)
    mode: str
    per: str

    def describe(self) -> str:
        return f"{self.step} {self.mode} per {self.per}"


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # in `per` units; None: no upper bound
    price: Decimal


@dataclass(frozen=True)
class Rule:
    """A price (account None) or an override (account set). Overrides may leave unit,
    per and offering to the price they replace."""

    entity: str
    offering: str | None
    unit: str | None
    per: str | None
    tiers: tuple[Tier, ...]
    account: str | None = None

    @property
    def source(self) -> str:
        return PRICE if self.account is None else OVERRIDE

    def matches(self, entity: str, offering: str, unit: str) -> bool:
        return (
            self.entity == entity
            and self.offering in (None, offering)
            and self.unit in (None, unit)
        )


@dataclass(frozen=True)
class Book:
    currency: str
    rounding: Rounding
    prices: tuple[Rule, ...]
    overrides: tuple[Rule, ...]
    valid_from: datetime | None = None  # from the file; stored beside the document

    def rule_for(self, account: str, entity: str, offering: str, unit: str) -> Rule | None:
        """The rule pricing this usage, overrides first, the most specific first."""
        base = _most_specific(r for r in self.prices if r.matches(entity, offering, unit))
        override = _most_specific(
            r for r in self.overrides if r.account == account and r.matches(entity, offering, unit)
        )
        if override is None:
            return base
        if base is None:
            return override if override.unit is not None and override.per is not None else None
        return replace(
            override,
            offering=override.offering if override.offering is not None else base.offering,
            unit=unit,
            per=override.per or base.per,
        )


def _most_specific(rules: Iterable[Rule]) -> Rule | None:
    found = list(rules)
    if not found:
        return None
    # Naming the offering, then the unit, is more specific (parse_book refuses equals).
    return max(found, key=lambda r: (r.offering is not None, r.unit is not None))


def scale_of(unit: str, per: str) -> int:
    if per == unit:
        return 1
    try:
        return SCALES[unit][per]
    except KeyError:
        known = ", ".join(SCALES.get(unit, {unit: 1}))
        raise BookError(
            f"per {per!r} does not apply to unit {unit!r} (use one of {known})"
        ) from None


# -- parsing a book -------------------------------------------------------------------


def _decimal(where: str, key: str, value: object, *, positive: bool = False) -> Decimal:
    # Strings only: TOML floats are binary (0.1 is not 0.1), integers are fine.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BookError(f'{where}: {key} must be a decimal string such as "0.05", not {value!r}')
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise BookError(f"{where}: {key} {value!r} is not a decimal number") from None
    if not number.is_finite() or number < 0 or (positive and number == 0):
        raise BookError(
            f"{where}: {key} must be a {'positive' if positive else 'non-negative'} number"
        )
    return number


def _text(where: str, key: str, value: object, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BookError(f"{where}: {key} must be a non-empty string")
    return value


def _keys(where: str, entry: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise BookError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )


def _tiers(where: str, entry: Mapping[str, Any]) -> tuple[Tier, ...]:
    if ("price" in entry) == ("tiers" in entry):
        raise BookError(f"{where}: give exactly one of price and tiers")
    if "price" in entry:
        return (Tier(None, _decimal(where, "price", entry["price"])),)
    raw = entry["tiers"]
    if not isinstance(raw, list) or not raw:
        raise BookError(f"{where}: tiers must be a non-empty list")
    tiers: list[Tier] = []
    for i, tier in enumerate(raw, start=1):
        at = f"{where} tier {i}"
        if not isinstance(tier, dict):
            raise BookError(f'{at}: must be a table {{ up_to = "...", price = "..." }}')
        _keys(at, tier, TIER_KEYS)
        if "price" not in tier:
            raise BookError(f"{at}: missing price")
        last = i == len(raw)
        if last and "up_to" in tier:
            raise BookError(f"{at}: the last tier has no up_to (it takes the rest)")
        if not last and "up_to" not in tier:
            raise BookError(f"{at}: every tier but the last needs up_to")
        up_to = None if last else _decimal(at, "up_to", tier["up_to"], positive=True)
        if up_to is not None and tiers and tiers[-1].up_to is not None and up_to <= tiers[-1].up_to:
            raise BookError(f"{at}: up_to must grow from tier to tier")
        tiers.append(Tier(up_to, _decimal(at, "price", tier["price"])))
    return tuple(tiers)


def _rule(where: str, entry: object, *, override: bool) -> Rule:
    if not isinstance(entry, dict):
        raise BookError(f"{where}: must be a table")
    _keys(where, entry, OVERRIDE_KEYS if override else PRICE_KEYS)
    entity = _text(where, "entity", entry.get("entity"))
    offering = _text(where, "offering", entry.get("offering"), required=False)
    unit = _text(where, "unit", entry.get("unit"), required=not override)
    per = _text(where, "per", entry.get("per"), required=False)
    if per is None and unit is not None and not override:
        per = unit
    if unit is not None and per is not None:
        try:
            scale_of(unit, per)
        except BookError as exc:
            raise BookError(f"{where}: {exc}") from None
    account = _text(where, "account", entry.get("account")) if override else None
    assert entity is not None
    return Rule(entity, offering, unit, per, _tiers(where, entry), account)


def _valid_from(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BookError(f"valid_from {value!r} is not an ISO 8601 time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise BookError("valid_from must be a date or a time such as 2024-03-01T00:00:00Z")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_book(data: Mapping[str, Any]) -> Book:
    """A validated Book from a parsed TOML file (or a stored document)."""
    _keys("price book", data, BOOK_KEYS)
    currency = _text("price book", "currency", data.get("currency"))
    rounding = data.get("rounding")
    if not isinstance(rounding, dict):
        raise BookError("price book: missing [rounding] (precision, mode, per)")
    _keys("[rounding]", rounding, ROUNDING_KEYS)
    step = _decimal("[rounding]", "precision", rounding.get("precision"), positive=True)
    if _places(step) > MAX_PLACES:
        raise BookError(f"[rounding]: precision finer than {SHOWN} is not supported")
    mode = rounding.get("mode")
    if mode not in MODES:
        raise BookError(f"[rounding]: mode must be one of {', '.join(MODES)}")
    per = rounding.get("per", "line")
    if per not in ROUND_PER:
        raise BookError(f"[rounding]: per must be one of {', '.join(ROUND_PER)}")
    prices = data.get("price", [])
    overrides = data.get("override", [])
    if not isinstance(prices, list) or not isinstance(overrides, list):
        raise BookError("price book: price and override are arrays of tables ([[price]])")
    assert currency is not None
    parsed_prices = tuple(_rule(f"price {i}", e, override=False) for i, e in enumerate(prices, 1))
    parsed_overrides = tuple(
        _rule(f"override {i}", e, override=True) for i, e in enumerate(overrides, 1)
    )
    _no_duplicates("price", parsed_prices)
    _no_duplicates("override", parsed_overrides)
    return Book(
        currency=currency,
        rounding=Rounding(step, str(mode), str(per)),
        prices=parsed_prices,
        overrides=parsed_overrides,
        valid_from=_valid_from(data.get("valid_from")),
    )


def _no_duplicates(what: str, rules: Sequence[Rule]) -> None:
    seen: dict[tuple[str | None, ...], int] = {}
    for i, rule in enumerate(rules, start=1):
        key = (rule.account, rule.entity, rule.offering, rule.unit)
        if key in seen:
            raise BookError(f"{what} {i} prices the same usage as {what} {seen[key]}")
        seen[key] = i


def _rule_document(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {} if rule.account is None else {"account": rule.account}
    out["entity"] = rule.entity
    for key in ("offering", "unit", "per"):
        if getattr(rule, key) is not None:
            out[key] = getattr(rule, key)
    out["tiers"] = [
        {"price": str(t.price)}
        if t.up_to is None
        else {"up_to": str(t.up_to), "price": str(t.price)}
        for t in rule.tiers
    ]
    return out


def book_document(book: Book) -> str:
    """The canonical JSON text of a book (what is stored; parse_book reads it back)."""
    return json.dumps(
        {
            "currency": book.currency,
            "rounding": {
                "precision": str(book.rounding.step),
                "mode": book.rounding.mode,
                "per": book.rounding.per,
            },
            "price": [_rule_document(r) for r in book.prices],
            "override": [_rule_document(r) for r in book.overrides],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def book_digest(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


# -- versions and months --------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    number: int
    valid_from: int  # ms, on an hour
    book: Book


def in_force(versions: Sequence[Version], at: int) -> Version | None:
    """The version pricing the hour starting at `at`."""
    found = None
    for version in sorted(versions, key=lambda v: (v.valid_from, v.number)):
        if version.valid_from <= at:
            found = version
    return found


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """'2024-03' -> its first instant and the next month's, UTC."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"month {month!r} is not YYYY-MM") from None
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def month_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m")


def previous_month(month: str) -> str:
    return month_of(month_bounds(month)[0] - timedelta(days=1))


def check_new_version(
    versions: Sequence[Version], valid_from: datetime, book: Book, closed_until: datetime | None
) -> None:
    """Refuse a version that would reprice a closed month or mix policies within one."""
    if (valid_from.minute, valid_from.second, valid_from.microsecond) != (0, 0, 0):
        raise BookError(f"valid_from {valid_from.isoformat()} is not on an hour: usage is hourly")
    if closed_until is not None and valid_from < closed_until:
        raise BookError(
            f"valid_from {valid_from.isoformat()} is inside a closed month (closed until "
            f"{closed_until.isoformat()}): closed invoices never change"
        )
    for version in versions:
        if version.book.currency != book.currency:
            raise BookError(
                f"currency {book.currency} differs from version {version.number}'s "
                f"{version.book.currency}: one database invoices in one currency"
            )
    # One rounding policy per month: it may change only where a month starts.
    at = to_ms(valid_from)
    before = in_force(versions, at - 1)
    if not _month_start(at) and before is not None and before.book.rounding != book.rounding:
        raise BookError(
            "the rounding policy may change only from the first of a month "
            f"(version {before.number} rounds {before.book.rounding.describe()})"
        )
    after = sorted((v for v in versions if v.valid_from > at), key=lambda v: v.valid_from)
    if after and not _month_start(after[0].valid_from) and after[0].book.rounding != book.rounding:
        raise BookError(
            f"version {after[0].number}, from later in this month, rounds "
            f"{after[0].book.rounding.describe()}: the policy may change only where a month starts"
        )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def _month_start(ms: int) -> bool:
    when = from_ms(ms)
    return when == month_bounds(month_of(when))[0]


# -- rating ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """The net billed quantity of one key in one hour (all its usage lines summed)."""

    entity: str
    offering: str
    unit: str
    hour: int  # ms
    quantity: Decimal


@dataclass(frozen=True)
class TierUse:
    start: Decimal  # in `per` units
    up_to: Decimal | None
    price: Decimal
    quantity: Fraction  # in `per` units

    def describe(self, per: str) -> str:
        bound = f"{self.start}-{self.up_to}" if self.up_to is not None else f"{self.start}+"
        return f"{bound} {per} @ {self.price}: {human(self.quantity)} {per}"


@dataclass(frozen=True)
class RatedLine:
    entity: str
    offering: str
    unit: str
    version: int
    source: str  # price or override
    per: str
    quantity: Decimal  # in the usage unit, exact
    tiers: tuple[TierUse, ...]  # those this line's usage reached
    graduated: bool  # the rule has more than one tier
    exact: Fraction
    amount: Decimal  # rounded (per line) or the exact amount shown to SHOWN places
    period_from: int  # ms: the hours this line covers
    period_to: int

    @property
    def scale(self) -> int:
        return scale_of(self.unit, self.per)

    @property
    def unit_price(self) -> Decimal | None:
        """The flat price; None for graduated tiers."""
        return None if self.graduated else self.tiers[0].price


@dataclass(frozen=True)
class UnpricedLine:
    entity: str
    offering: str
    unit: str
    quantity: Decimal
    reason: str


@dataclass(frozen=True)
class Rated:
    account: str
    lines: tuple[RatedLine, ...]
    unpriced: tuple[UnpricedLine, ...]
    rounding: Rounding | None
    total: Decimal  # under the rounding policy; 0 when nothing is priced

    @property
    def exact(self) -> Fraction:
        return sum((line.exact for line in self.lines), Fraction(0))


def round_amount(value: Fraction, rounding: Rounding) -> Decimal:
    """`value` as a multiple of the rounding step, by the rounding mode, exactly."""
    units = value / Fraction(rounding.step)
    low = units.numerator // units.denominator
    rest = units - low
    if rest == 0:
        chosen = low
    elif rounding.mode == "down":  # toward zero
        chosen = low if value > 0 else low + 1
    elif rounding.mode == "up":  # away from zero
        chosen = low + 1 if value > 0 else low
    elif rest != Fraction(1, 2):
        chosen = low + 1 if rest > Fraction(1, 2) else low
    elif rounding.mode == "half-up":  # a half away from zero
        chosen = low + 1 if value > 0 else low
    else:  # half-even
        chosen = low if low % 2 == 0 else low + 1
    return _decimal_of(Fraction(chosen) * Fraction(rounding.step), rounding.step)


def _places(step: Decimal) -> int:
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int), "a finite step"
    return max(0, -exponent)


def _decimal_of(value: Fraction, step: Decimal) -> Decimal:
    """A Fraction that is a whole multiple of `step`, as a Decimal with step's places."""
    places = _places(step)
    scaled = value * 10**places
    assert scaled.denominator == 1, "not a multiple of the step"
    return Decimal(scaled.numerator).scaleb(-places)


def shown(value: Fraction) -> Decimal:
    """An exact amount to SHOWN places (half-even), for lines of an invoice rounded as a whole."""
    return round_amount(value, Rounding(SHOWN, "half-even", "line"))


def human(value: Fraction) -> str:
    """A quantity in priced units for people: exact when it has at most 6 places."""
    text = f"{round_amount(value, Rounding(Decimal('0.000001'), 'half-even', 'line')):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if Fraction(Decimal(text)) == value else f"~{text}"


def _integral(tiers: Sequence[Tier], scale: int, start: Fraction, end: Fraction) -> list[Fraction]:
    """Per tier, the signed quantity (in `per` units) of [start, end) it holds; the first
    tier also takes what lies below 0 (a correction past the month's start)."""
    sign = 1 if end >= start else -1
    low, high = (start, end) if sign == 1 else (end, start)
    low, high = low / scale, high / scale
    parts: list[Fraction] = []
    floor: Fraction | None = None
    for tier in tiers:
        top = None if tier.up_to is None else Fraction(tier.up_to)
        a = low if floor is None else max(low, floor)
        b = high if top is None else min(high, top)
        parts.append(sign * max(Fraction(0), b - a))
        floor = top
    return parts


@dataclass
class _Open:
    rule: Rule
    quantity: Decimal = Decimal(0)
    per_tier: list[Fraction] = field(default_factory=list)
    period_from: int = 0
    period_to: int = 0


def rate_month(
    account: str,
    usages: Iterable[Usage],
    versions: Sequence[Version],
    month_start: int,
    month_end: int,
) -> Rated:
    """Price one account's month (`usages` are its hours in [month_start, month_end))."""
    ordered = sorted(versions, key=lambda v: (v.valid_from, v.number))
    # Usage before any version is unpriced, but the month still has a policy to show.
    policy = (
        in_force(ordered, month_start)
        or next((v for v in ordered if month_start <= v.valid_from < month_end), None)
        or (ordered[0] if ordered else None)
    )
    position: dict[tuple[str, str | None, str], Fraction] = {}
    lines: dict[tuple[str, str, str, int, str], _Open] = {}
    unpriced: dict[tuple[str, str, str, str], Decimal] = {}
    for usage in sorted(usages, key=lambda u: (u.hour, u.entity, u.offering, u.unit)):
        version = in_force(ordered, usage.hour)
        rule = (
            None
            if version is None
            else version.book.rule_for(account, usage.entity, usage.offering, usage.unit)
        )
        if version is None or rule is None:
            reason = "no price book in force" if version is None else "no price in the book"
            key4 = (usage.entity, usage.offering, usage.unit, reason)
            unpriced[key4] = unpriced.get(key4, Decimal(0)) + usage.quantity
            continue
        assert rule.per is not None
        scale = scale_of(usage.unit, rule.per)
        scope = (rule.entity, rule.offering, usage.unit)
        start = position.get(scope, Fraction(0))
        end = start + Fraction(usage.quantity)
        position[scope] = end
        key = (usage.entity, usage.offering, usage.unit, version.number, rule.source)
        line = lines.get(key)
        if line is None:
            line = lines[key] = _Open(rule, per_tier=[Fraction(0)] * len(rule.tiers))
            line.period_from = usage.hour
        line.quantity += usage.quantity
        line.period_to = usage.hour + HOUR_MS
        for i, part in enumerate(_integral(rule.tiers, scale, start, end)):
            line.per_tier[i] += part
    rounding = None if policy is None else policy.book.rounding
    rated = tuple(_close_line(key, line, rounding) for key, line in sorted(lines.items()))
    if rounding is None:
        total = Decimal(0)
    elif rounding.per == "line":
        total = sum((line.amount for line in rated), _decimal_of(Fraction(0), rounding.step))
    else:
        total = round_amount(sum((line.exact for line in rated), Fraction(0)), rounding)
    return Rated(
        account=account,
        lines=rated,
        unpriced=tuple(
            UnpricedLine(e, o, u, q, reason)
            for (e, o, u, reason), q in sorted(unpriced.items())
            if q != 0
        ),
        rounding=rounding,
        total=total,
    )


def _close_line(
    key: tuple[str, str, str, int, str], line: _Open, rounding: Rounding | None
) -> RatedLine:
    entity, offering, unit, version, source = key
    assert line.rule.per is not None and rounding is not None
    uses: list[TierUse] = []
    start = Decimal(0)
    exact = Fraction(0)
    for tier, quantity in zip(line.rule.tiers, line.per_tier, strict=True):
        exact += quantity * Fraction(tier.price)
        if quantity != 0 or len(line.rule.tiers) == 1:
            uses.append(TierUse(start, tier.up_to, tier.price, quantity))
        start = tier.up_to if tier.up_to is not None else start
    amount = round_amount(exact, rounding) if rounding.per == "line" else shown(exact)
    return RatedLine(
        entity=entity,
        offering=offering,
        unit=unit,
        version=version,
        source=source,
        per=line.rule.per,
        quantity=line.quantity,
        tiers=tuple(uses),
        graduated=len(line.rule.tiers) > 1,
        exact=exact,
        amount=amount,
        period_from=line.period_from,
        period_to=line.period_to,
    )


# -- adjustments ----------------------------------------------------------------------


@dataclass(frozen=True)
class Invoiced:
    """What closed invoices hold for one account and closed month so far."""

    month: str
    invoice_id: str | None  # None: the month closed with nothing for this account
    amount: Decimal
    unpriced: Mapping[tuple[str, str, str], Decimal]
    last_line_id: int  # usage lines up to this id are in


@dataclass(frozen=True)
class Adjustment:
    month: str
    invoice_id: str | None
    amount: Decimal  # positive: a debit; negative: a credit
    unpriced: tuple[UnpricedLine, ...]
    after_line_id: int


def adjustment(rerated: Rated, invoiced: Invoiced) -> Adjustment | None:
    """The difference late usage made to a closed month, or None when it made none."""
    amount = rerated.total - invoiced.amount
    now: dict[tuple[str, str, str], Decimal] = {}
    for item in rerated.unpriced:
        key = (item.entity, item.offering, item.unit)
        now[key] = now.get(key, Decimal(0)) + item.quantity
    keys = sorted(set(now) | set(invoiced.unpriced))
    unpriced = tuple(
        UnpricedLine(
            *key,
            now.get(key, Decimal(0)) - invoiced.unpriced.get(key, Decimal(0)),
            "late usage of a closed month",
        )
        for key in keys
        if now.get(key, Decimal(0)) != invoiced.unpriced.get(key, Decimal(0))
    )
    if amount == 0 and not unpriced:
        return None
    return Adjustment(invoiced.month, invoiced.invoice_id, amount, unpriced, invoiced.last_line_id)


def invoice_id(account: str, month: str) -> str:
    """Derived from what the invoice is: closing the same month again finds the same id."""
    digest = hashlib.sha256(f"{account}\x1f{month}".encode()).hexdigest()[:16]
    return f"inv-{month}-{digest}"
