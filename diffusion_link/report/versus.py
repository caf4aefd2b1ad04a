"""The captioning table's second comparison: every row paired with its setting's row tested through a named
bridge (the recipe's ``compare_to``, e.g. the regressor), the same way as with raw audio
(:func:`diffusion_link.report.tables.paired_difference`: the same clips matched by id, in clip-id order, the
same resamples). Each row's ``scores.json`` records the bridge (``compare_to``, an export folder); the named row
of a setting is the plain captioner's row (no noise injection, not trained through a bridge) fed that bridge's
output. A setting without such a row says so in the cell ("no ... row"), and a warning names it.
"""

from __future__ import annotations


def named_row(systems: list, system):
    """The row ``system`` is also compared with (its setting's row through the ``compare_to`` bridge), None when
    it records no ``compare_to``; raises LookupError naming what is missing when its setting has no such row."""
    from diffusion_link.report.tables import is_ceiling

    bridge = system.report.get("compare_to")
    if not bridge:
        return None
    for other in systems:
        training = other.report.get("captioner_training") or {}
        plain = not training.get("noise_std") and not training.get("train_through")
        if other.setting == system.setting and other.report.get("bridge") == bridge and plain and not is_ceiling(other):
            return other
    known = ", ".join(s.name for s in systems if s.setting == system.setting)
    raise LookupError(f"no {system.setting} row through {bridge} (compare_to) among the {system.setting} rows ({known})")


def versus_named(systems: list, system, keys: list[str], clip_info: dict | None, warnings: list[str]) -> dict | None:
    """``{"name": the named row, "paired": [{"text", "bold"} per key of ``keys``], "versus": CIDEr-D's cell,
    "bold", "animals": right animals' cell in points, "animals_bold"}``; None when the row records no
    ``compare_to``; the row itself and the ceiling (scored leave-one-out) get empty cells."""
    from diffusion_link.report.tables import RIGHT_ANIMALS, _compare, format_difference, is_ceiling

    try:
        base = named_row(systems, system)
    except LookupError as missing:
        warnings.append(str(missing))
        text = f"no row through {system.report['compare_to']}"
        return {"name": "", "paired": [{"text": text, "bold": False} for _ in keys], "versus": text, "bold": False, "animals": text, "animals_bold": False}
    if base is None:
        return None
    out = {"name": base.name, "paired": [], "versus": "", "bold": False, "animals": "", "animals_bold": False}
    if base is system or is_ceiling(system):
        out["paired"] = [{"text": "", "bold": False} for _ in keys]
        return out
    for key in keys:
        p = _compare(base, system, key, None, warnings)
        text, bold = (p, False) if isinstance(p, str) else (format_difference(p), p.excludes_zero)
        out["paired"].append({"text": text, "bold": bold})
        if key == "cider_d":
            out["versus"], out["bold"] = text, bold
    if clip_info:
        p = _compare(base, system, RIGHT_ANIMALS, clip_info, warnings)
        out["animals"], out["animals_bold"] = (p, False) if isinstance(p, str) else (format_difference(p, 0, 100, " pts"), p.excludes_zero)
    return out


__all__ = ["named_row", "versus_named"]
