"""The Java classpath of Cassandra's server (cassandra-all and its runtime dependencies), resolved by Maven.

`cassandra_runtime/pom.xml` names the version; Maven downloads the jars into its local repository
(~/.m2, which is the cache) and writes their paths to `cassandra_runtime/target/classpath.txt`.
`.ci/setup` runs this module once; tests call `cassandra_classpath()`, which resolves again only when
the file is missing, older than the pom, or names a jar that is gone (a cleaned ~/.m2).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "cassandra_runtime"
POM = RUNTIME_DIR / "pom.xml"
CLASSPATH_FILE = RUNTIME_DIR / "target" / "classpath.txt"


def _resolve_command(output_file: Path) -> list[str]:
    mvn = shutil.which("mvn") or "mvn"
    # -B: no progress bars in a captured log; runtime scope: what the daemon loads, no test or provided jars.
    return [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        "dependency:build-classpath",
        "-Dmdep.includeScope=runtime",
        f"-Dmdep.outputFile={output_file}",
    ]


def _is_fresh() -> bool:
    if not CLASSPATH_FILE.exists() or CLASSPATH_FILE.stat().st_mtime <= POM.stat().st_mtime:
        return False
    entries = CLASSPATH_FILE.read_text().strip().split(os.pathsep)
    return bool(entries[0]) and all(Path(entry).exists() for entry in entries)


def cassandra_classpath() -> str:
    """The classpath for `java -cp`, running the Maven resolution first when it is missing or stale."""
    if not POM.exists():
        raise RuntimeError(f"{POM} is missing: Cassandra's classpath is resolved from the project's source tree")
    if _is_fresh():
        return CLASSPATH_FILE.read_text().strip()
    CLASSPATH_FILE.parent.mkdir(parents=True, exist_ok=True)
    # Two xdist workers may both find the file missing: the lock makes the second one wait and reuse the result.
    with (CLASSPATH_FILE.parent / "classpath.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_fresh():
            _resolve()
    return CLASSPATH_FILE.read_text().strip()


def _resolve() -> None:
    partial = CLASSPATH_FILE.with_suffix(".partial")
    command = _resolve_command(partial)
    if shutil.which(command[0]) is None:
        raise RuntimeError(
            "Maven (mvn) is not installed, so Cassandra's jars cannot be resolved: run `bash .ci/setup` "
            "or install the Debian package maven"
        )
    try:
        resolved = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"Maven did not resolve Cassandra's classpath within 15 min: {' '.join(command)}") from error
    if resolved.returncode != 0 or not partial.exists():
        raise RuntimeError(
            f"Maven failed to resolve Cassandra's classpath (exit {resolved.returncode}); run it to see why:\n"
            f"  {' '.join(command)}\n{resolved.stdout[-3000:]}{resolved.stderr[-3000:]}"
        )
    # Renamed into place only when complete, so an interrupted resolution never looks fresh.
    os.replace(partial, CLASSPATH_FILE)


if __name__ == "__main__":
    print(f"Cassandra classpath: {len(cassandra_classpath().split(os.pathsep))} jars in {CLASSPATH_FILE}")
