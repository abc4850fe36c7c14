#!/usr/bin/env python3
"""Summarizes CTest JUnit files (ctest --output-junit) written by scripts/test.sh: how many tests
passed, failed and were skipped, and why each was skipped. A skipped test says why on its output
("KVS_SKIPPED: ..." from tests/kvs_skip.h and the test scripts); tests with the same reason are
listed together.

Usage: test_summary.py LABEL=JUNIT.xml ...
"""
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict


def reason_of(case):
    out = case.findtext("system-out") or ""
    reasons = []
    for line in out.splitlines():
        if "KVS_SKIPPED: " in line:
            r = line.split("KVS_SKIPPED: ", 1)[1].strip()
            # Catch2 cases print "<case name>: <reason>"; the test name ends with the case name.
            name = case.get("name", "")
            i = r.find(": ")
            while i >= 0:
                if name.endswith(r[:i]):
                    r = r[i + 2:]
                    break
                i = r.find(": ", i + 1)
            reasons.append(r)
    if reasons:
        return "; ".join(OrderedDict.fromkeys(reasons))
    sk = case.find("skipped")
    msg = sk.get("message", "") if sk is not None else ""
    return f"no reason printed ({msg or 'not run'})"


def main():
    total_skipped = 0
    for arg in sys.argv[1:]:
        label, path = arg.split("=", 1)
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as e:
            print(f"{label}: no test results ({e})")
            continue
        cases = root.iter("testcase")
        n_pass = n_fail = 0
        skipped = OrderedDict()
        for c in cases:
            status = c.get("status", "")
            if status == "notrun" or c.find("skipped") is not None:
                skipped.setdefault(reason_of(c), []).append(c.get("name", "?"))
            elif c.find("failure") is not None or status == "fail":
                n_fail += 1
            else:
                n_pass += 1
        n_skip = sum(len(v) for v in skipped.values())
        total_skipped += n_skip
        print(f"{label}: {n_pass} passed, {n_fail} failed, {n_skip} skipped")
        for reason, names in skipped.items():
            print(f"  {len(names)} skipped: {reason}")
            for n in names:
                print(f"      {n}")
    if total_skipped == 0:
        print("no test was skipped")


if __name__ == "__main__":
    main()
