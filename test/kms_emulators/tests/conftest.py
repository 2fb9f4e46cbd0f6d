import pathlib
import sys

# Make <repo>/test importable so that `import kms_emulators` works.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from kms_emulators.fixtures import *  # noqa: E402,F401,F403
