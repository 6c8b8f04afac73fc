"""Training infrastructure shared by the experiments: resumable, fingerprinted checkpoints.

* :func:`resume_or_start` — open a run's checkpoint directory: resume when the settings match,
  refuse when they differ, start fresh (moving the old run aside) when asked.
* :class:`Run` — the open run: ``step``, ``state``, ``history``, :meth:`Run.save`.
* :func:`settings_fingerprint` / :func:`canonical_json` — the settings' identity.
"""

from equijax.training.checkpoint import (
    CheckpointError,
    Run,
    SettingsMismatchError,
    canonical_json,
    resume_or_start,
    settings_fingerprint,
)

__all__ = [
    "CheckpointError",
    "Run",
    "SettingsMismatchError",
    "canonical_json",
    "resume_or_start",
    "settings_fingerprint",
]
