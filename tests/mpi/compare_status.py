"""minidist.compare's main with this job's arguments; each rank records its exit status
(in $MINIDIST_TEST_OUT/statusR) before exiting with it, so a test sees every rank's."""
import os
import sys
from pathlib import Path

import minidist  # noqa: F401
from minidist.cli_errors import launcher_rank
from minidist.compare import main

code = main(sys.argv[1:])
Path(os.environ["MINIDIST_TEST_OUT"], f"status{launcher_rank()}").write_text(str(code))
sys.exit(code)
