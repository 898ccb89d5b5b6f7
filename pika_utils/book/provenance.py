"""One provenance note per chapter: where this run's models and problems came from (hub, a
packaged offline copy, a user's file), their sha256, and any fallback, stated once as Markdown
instead of warnings scattered through the cells."""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..models import registry


def _short(sha: str | None) -> str:
    return f"`{sha[:12]}…`" if sha else "—"


def provenance_lines(problems: pd.DataFrame | None = None,
                     loaded: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Markdown bullet lines: one per model loaded in this process and one per problem source."""
    loaded = registry.LOADED if loaded is None else loaded
    lines = []
    for name, info in sorted(loaded.items()):
        why = f"; the hub copy was not used because {info['fallback_reason']}" if info.get("fallback_reason") else ""
        lines.append(f"- model **{name}**: {info['source']}, weights sha256 {_short(info.get('weights_sha256'))}{why}")
    for rec in (problems.attrs.get("sources") or []) if problems is not None else []:
        files = rec.get("files")
        if files:
            for f in files:
                lines.append(f"- problems **{f['source']}**: {f['rows']} rows from the {f['format']} file "
                             f"`{f['path'].rsplit('/', 1)[-1]}`, sha256 {_short(f['sha256'])}")
        else:
            where = ", ".join(rec.get("source_values", [])) or rec["name"]
            lines.append(f"- problems **{rec['name']}**: {rec['n_problems']} problems ({where})")
    return lines


def note(problems: pd.DataFrame | None = None):
    """The chapter's provenance note, for ``display``: an IPython Markdown object."""
    from IPython.display import Markdown

    lines = provenance_lines(problems)
    body = "\n".join(lines) if lines else "- no model was loaded and no problems were read in this chapter"
    return Markdown("**Where this chapter's models and data came from.**\n\n" + body)
