"""The findings of one submission on its own: form identities and the misread diagnosis."""

from __future__ import annotations

from dataclasses import dataclass

from pantau.schemas import Alert, Suggestion, Tally

from .form import Capacity, FormResult, check_form, form_alerts
from .ocr import diagnose, misread_alert


@dataclass(frozen=True, slots=True)
class Findings:
    """What a tally's own numbers show: the form check, its alerts, and misread suggestions."""

    form: FormResult
    alerts: list[Alert]
    suggestions: list[Suggestion]

    @property
    def open(self) -> dict[str, str]:
        """Detector → alert id of every finding."""
        return {a.detector: a.alert_id for a in self.alerts}


def find(tally: Tally, capacity: Capacity = Capacity()) -> Findings:
    form = check_form(tally, capacity)
    alerts = form_alerts(tally, form)
    suggestions = diagnose(tally, form)
    if suggestions:
        alerts.append(misread_alert(tally, form, suggestions))
    return Findings(form, alerts, suggestions)
