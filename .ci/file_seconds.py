#!/usr/bin/env python3
"""Writes tests/file_seconds.json, the measured seconds of each test file, from a JUnit XML
report of a whole run (setup, call and teardown of every test in the file):

  bash .ci/test --junitxml=/tmp/suite.xml && .venv/bin/python .ci/file_seconds.py /tmp/suite.xml

tests/conftest.py starts the heaviest files first, so that the two workers (each taking
whole files) finish together instead of one waiting on a long file started last.
"""

import collections
import json
import os
import sys
import xml.etree.ElementTree as ET


def main(report: str) -> None:
    seconds = collections.Counter()
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        if module.startswith("test_"):
            seconds[module + ".py"] += float(case.get("time") or 0.0)
    if not seconds:
        sys.exit(f"{report}: no test cases found")
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "tests", "file_seconds.json")
    with open(out, "w") as f:
        json.dump({k: round(v, 1) for k, v in seconds.most_common()}, f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(seconds)} files, {sum(seconds.values()):.0f} s in all")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: file_seconds.py REPORT.xml")
    main(sys.argv[1])
