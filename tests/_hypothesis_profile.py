"""The hypothesis settings of the property tests: no deadline (the first
example compiles kernels), and failing examples kept in the repository's
example database, so that every later run, and CI, replays them first
(fixed seeds would make hypothesis leave the database alone)."""
import pathlib

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

EXAMPLES = pathlib.Path(__file__).parent / ".hypothesis-examples"

settings.register_profile("fastbp-properties", database=DirectoryBasedExampleDatabase(EXAMPLES), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
PROPERTIES = settings.get_profile("fastbp-properties")
