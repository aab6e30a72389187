"""Showing alerts to a person on a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def alert_line(alert: dict[str, Any], lang: str = "en") -> Text:
    """One alert as one line: severity, detector, TPS/region, reason, best suggestion."""
    reason = alert["reason_en"] if lang == "en" else alert["reason"]
    line = Text()
    line.append(f"{alert['severity'].upper():8s} ", SEVERITY_STYLE.get(alert["severity"], ""))
    line.append(f"{alert['detector']:30s} ", "bold")
    line.append(f"{alert.get('kode_tps') or alert['region']:13s}  ")
    line.append(reason)
    if alert.get("suggestions"):
        best = alert["suggestions"][0]
        line.append(f"  → {best['field']} {best['current']}→{best['proposed']} ({best['confidence']:.0%})", "green")
    return line


def print_alert(console: Console, alert: dict[str, Any], lang: str = "en") -> None:
    """One line per alert: cut to the width on a terminal, whole when written to a file or pipe."""
    if console.is_terminal:
        console.print(alert_line(alert, lang), overflow="ellipsis", no_wrap=True, crop=True)
    else:
        console.print(alert_line(alert, lang), soft_wrap=True)
