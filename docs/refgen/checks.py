"""The `meshctl check` codes, from the catalogue itself (``meshctl.control.analysis.codes``): each
code with its category, severity, what passing means and how to fix a finding."""

from __future__ import annotations

from refgen.markdown import anchor, code, table, text


def render() -> str:
    from meshctl.control.analysis.codes import CATEGORIES, CHECKS

    out = [
        "# Check codes\n\n",
        "`meshctl check` (and `GET /api/v1/check`) reports each finding under a stable code: codes never "
        "change meaning and are never reused, so scripts and runbooks may key on them. `MC00xx` are the "
        "CLI's own checks; the rest come from the control plane's analysis. It exits 1 when any finding "
        "is an error. Generated from the catalogue when this site was built.\n\n",
    ]
    for category, heading in CATEGORIES.items():
        rows = [[code(c.code), c.severity, text(c.title), text(c.hint)] for c in CHECKS if c.category == category]
        if rows:
            out.append(f"## {text(heading)} {{#{anchor('checks', category)}}}\n\n")
            out.append(table(["code", "severity", "passing means", "to fix a finding"], rows) + "\n")
    return "".join(out)
