"""The one exception for input that pantau refuses, with a reason people can read."""


class InvalidSubmission(ValueError):
    """A message that cannot be processed (a submission, or a verdict from the desk).

    ``code`` is one of a small fixed set (safe as a metric label); ``reason`` says exactly what is wrong.
    """

    CODES = ("not_json", "schema", "kode_tps", "too_large")

    def __init__(self, code: str, reason: str):
        if code not in self.CODES:
            raise ValueError(f"unknown rejection code {code!r}")
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
