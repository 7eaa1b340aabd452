"""Fit markdown sections into a character budget, most valuable first.

The sitrep and the briefing are read by agents whose context is scarce (Claude
Code caps a hook's additional context at 10,000 characters), so their text
must never exceed the budget, and a long world-state document must not crowd
out everything else. So the budget is spent in passes:

1. each section, in order, gets up to its share of the budget;
2. a section that got nothing gets its first item that fits, if any;
3. what is left goes to the items that did not fit yet, in section order;
4. and last to a document that was cut, which grows into the rest.

Within a section, items are taken in order (they come ranked) and one that
does not fit is skipped for smaller ones after it. An item marked cuttable
(a document) is cut at a line end, with a marker, rather than dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CUT_MARK = "\n[…]"
MIN_CUT = 60  # a cut piece shorter than this says nothing: leave it out
SEP = "\n\n"  # between the head and sections


@dataclass(slots=True)
class Item:
    text: str
    memory_id: int | None = None
    cuttable: bool = False


@dataclass(slots=True)
class Section:
    name: str
    title: str
    items: list[Item]
    share: float  # of the budget, in the first pass


@dataclass(slots=True)
class Fitted:
    text: str
    sections: list[str]
    memory_ids: list[int]
    truncated: bool


@dataclass(slots=True)
class _State:
    budget: int
    used: int = 0
    taken: dict[tuple[int, int], str] = field(default_factory=dict)
    opened: set[int] = field(default_factory=set)


def cut(text: str, room: int) -> str:
    """`text` cut to at most `room` characters, at a line end if one is near."""
    if len(text) <= room:
        return text
    keep = max(0, room - len(CUT_MARK))
    head = text[:keep]
    nl = head.rfind("\n")
    if nl >= keep // 2:
        head = head[:nl]
    return head.rstrip() + CUT_MARK


def _place(
    st: _State, si: int, sec: Section, limit: int, spent: int, *, grow: bool, most: int
) -> int:
    """Take up to `most` more of the section's items that fit within `limit`.

    `spent` is what the section has used so far; `grow` lets a cut item
    grow (or a cuttable one be cut) rather than taking only whole items.
    Returns the section's spending.
    """
    for ii, item in enumerate(sec.items):
        if most <= 0:
            break
        key = (si, ii)
        have = st.taken.get(key)
        if have is not None and (len(have) == len(item.text) or not grow):
            continue
        opening = 0 if si in st.opened else len(SEP) + len(sec.title)
        room = min(limit - spent, st.budget - st.used) - opening
        old = 0 if have is None else 1 + len(have)
        if 1 + len(item.text) - old <= room:
            text = item.text
        elif grow and item.cuttable and room + old - 1 >= MIN_CUT:
            text = cut(item.text, room + old - 1)
            if have is not None and len(text) <= len(have):
                continue
        else:
            continue
        delta = opening + 1 + len(text) - old
        st.taken[key] = text
        st.opened.add(si)
        st.used += delta
        spent += delta
        most -= 1
    return spent


def fit(sections: list[Section], budget: int, *, head: str = "", tail: str = "") -> Fitted:
    """Render `head` and the sections within `budget` characters.

    `tail` (e.g. how to get more) is added only when something was left out
    and it still fits.
    """
    st = _State(budget=budget, used=len(head))
    spent = [0] * len(sections)
    every = sum(len(s.items) for s in sections)
    # 1. Each section up to its share.
    for si, sec in enumerate(sections):
        spent[si] = _place(st, si, sec, int(sec.share * budget), 0, grow=True, most=every)
    # 2. A section left out so far gets one item, if one fits.
    for si, sec in enumerate(sections):
        if si not in st.opened:
            spent[si] = _place(st, si, sec, budget, spent[si], grow=False, most=1)
    # 3. Whole items, in order; 4. then what was cut grows into what is left.
    for grow in (False, True):
        for si, sec in enumerate(sections):
            spent[si] = _place(st, si, sec, budget, spent[si], grow=grow, most=every)
    parts = [head] if head else []
    names: list[str] = []
    ids: list[int] = []
    truncated = False
    for si, sec in enumerate(sections):
        lines = []
        for ii, item in enumerate(sec.items):
            text = st.taken.get((si, ii))
            if text is None or len(text) < len(item.text):
                truncated = True
            if text is None:
                continue
            lines.append(text)
            if item.memory_id is not None:
                ids.append(item.memory_id)
        if lines:
            names.append(sec.name)
            parts.append(sec.title + "\n" + "\n".join(lines))
    text = SEP.join(parts)
    if truncated and tail and len(text) + len(SEP) + len(tail) <= budget:
        text += SEP + tail
    if len(text) > budget:  # cannot happen (the costs above are exact or over); never trust it
        text = cut(text, budget)
    return Fitted(text=text, sections=names, memory_ids=ids, truncated=truncated)
