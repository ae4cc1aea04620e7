"""Running things: data in, metrics out. Importing the package registers the config resolvers
(``${tune:...}``, ``${tune_trials:}``: ``experiments.studies.tuning``), so any config that uses them
resolves wherever it is composed."""
from experiments.studies import tuning as _tuning  # noqa: F401
