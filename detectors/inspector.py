"""One submission in, its findings out: the form checks, the misread diagnosis, revision tracking, and
(with a :class:`~.monitor.RegionalMonitor`) peer outliers and the region sums of the statistical tests.

The stream and the offline replay both call :class:`TpsInspector`; there is no other path.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, replace

from pantau.schemas import Alert, Tally

from .findings import find
from .form import Capacity, check_form
from .monitor import RegionalMonitor
from .regional import Profile, profile
from .revision import CompactStates, State, revise, state_key, unpack


@dataclass(frozen=True, slots=True)
class Inspection:
    """The alerts for one submission, and the revision state to store once they are published."""

    alerts: list[Alert]
    key: str
    state: State
    tally: Tally
    previous: Profile | None  # the regional profile of the previous version, to withdraw
    profile: Profile | None
    first: bool = False  # the first submission of this TPS and ballot type


class TpsInspector:
    """Runs every TPS-level detector on a tally.

    ``states`` holds the revision state per ``kode_tps:jenis`` (compactly, :class:`~.revision.CompactStates`):
    a dict offline, a Faust table in the stream. :meth:`inspect` does not write it; :meth:`commit` does, after the caller has published.

    >>> from pantau.schemas import parse_envelope, normalize
    >>> inspector = TpsInspector()
    >>> doc = {"chart": {"null": None, "100025": 105, "100026": 48, "100027": 880},
    ...        "administrasi": {"suara_sah": 233, "suara_tidak_sah": 4, "suara_total": 237}}
    >>> tally = normalize(parse_envelope({"kode_tps": "3173011002090", "jenis": "ppwp", "doc": doc}))
    >>> [a.detector for a in inspector(tally)]
    ['form.sum_valid', 'form.capacity', 'ocr.misread']
    >>> inspector(tally)[-1].suggestions[0]
    Suggestion(field='chart.100027', current=880, proposed=80, confidence=0.9..., edit='crossed_box')
    """

    def __init__(self, capacity: Capacity = Capacity(), states: MutableMapping[str, State] | None = None,
                 monitor: RegionalMonitor | None = None):  # fmt: skip
        self.capacity = capacity
        self.states: MutableMapping[str, State] = CompactStates({} if states is None else states)
        self.monitor = monitor

    def inspect(self, tally: Tally) -> Inspection:
        now = find(tally, self.capacity)
        key = state_key(tally)
        previous_state = self.states.get(key)
        revision_alerts, state = revise(previous_state, tally, now, self._find)
        alerts = now.alerts + revision_alerts
        new = previous = None
        if self.monitor is not None:
            new = profile(tally, now.form)
            if previous_state is not None:
                if previous_state["c"] == state["c"]:
                    previous = new
                else:
                    old = replace(tally, counts=unpack(previous_state["c"]))
                    previous = profile(old, check_form(old, self.capacity))
            if new != previous:
                alerts += self.monitor.score(tally, new)
        return Inspection(alerts, key, state, tally, previous, new, first=previous_state is None)

    def _find(self, tally: Tally):
        return find(tally, self.capacity)

    def commit(self, inspection: Inspection) -> list[str]:
        """Store the revision state and update the regional state; return the regional keys changed."""
        self.states[inspection.key] = inspection.state
        if self.monitor is None:
            return []
        return self.monitor.apply(inspection.tally, inspection.previous, inspection.profile)

    def __call__(self, tally: Tally) -> list[Alert]:
        """Inspect and commit at once (offline use)."""
        inspection = self.inspect(tally)
        self.commit(inspection)
        return inspection.alerts
