// Package conformance runs libiscsi's iscsi-test-cu conformance suite against gatewayd and, as the
// reference, Debian's tgt, and writes docs/CONFORMANCE.md from the outcomes.
//
// This file is the pure part: a parser for iscsi-test-cu's verbose CUnit output. The suite itself is in
// conformance_test.go (build tag qa).
package conformance

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Outcome of one test.
type Outcome string

const (
	Passed  Outcome = "pass"
	Failed  Outcome = "FAIL"
	Skipped Outcome = "skip"
	// NotRun marks a test iscsi-test-cu lists but never reported (it crashed or was killed first).
	NotRun Outcome = "not run"
)

// TestResult is the outcome of one iscsi-test-cu test.
type TestResult struct {
	Name    string // "Suite.Test", e.g. "Read10.BeyondEol" (the FAMILY "ALL." prefix is dropped)
	Outcome Outcome
	// Output holds what the test printed between its header and its verdict, then the assertion lines
	// CUnit lists after FAILED, trimmed of indentation.
	Output []string
	// Reason is the first "[SKIPPED]" or "[FAILED]" message, without the bracket tag.
	Reason string
}

// Summary is CUnit's "Run Summary" tests row: how many tests ran, passed (skips included: CUnit
// counts a skipped test as passed) and failed.
type Summary struct {
	Ran, Passed, Failed int
}

// Report is a parsed iscsi-test-cu run.
type Report struct {
	Tests []TestResult
	// Summary is nil when the output ended before CUnit's summary (a crash).
	Summary *Summary
}

// Counts tallies outcomes.
func (r *Report) Counts() map[Outcome]int {
	c := map[Outcome]int{}
	for _, t := range r.Tests {
		c[t.Outcome]++
	}
	return c
}

// Check compares the parsed outcomes with CUnit's own summary, so a parser that lost a test or read
// a verdict wrong is caught: ran must equal the tests parsed, failed the tests failed, passed the
// tests passed plus skipped.
func (r *Report) Check() error {
	if r.Summary == nil {
		return fmt.Errorf("no CUnit Run Summary in the output (iscsi-test-cu crashed or was killed?)")
	}
	c := r.Counts()
	s := r.Summary
	if len(r.Tests) != s.Ran || c[Failed] != s.Failed || c[Passed]+c[Skipped] != s.Passed {
		return fmt.Errorf("parsed %d tests (%d pass, %d skip, %d fail) but CUnit reports %d ran, %d passed, %d failed",
			len(r.Tests), c[Passed], c[Skipped], c[Failed], s.Ran, s.Passed, s.Failed)
	}
	return nil
}

var (
	// "Suite: Read10"
	suiteRE = regexp.MustCompile(`^Suite: (\S+)\s*$`)
	// "  Test: BeyondEol ...", then the test's own output or the verdict on the same line.
	testRE = regexp.MustCompile(`^  Test: (\S+) \.\.\.(.*)$`)
	// "               tests    230    230    221      9        0"
	summaryRE = regexp.MustCompile(`^\s+tests\s+(\d+)\s+(\d+)\s+(\d+|n/a)\s+(\d+)\s+(\d+)\s*$`)
	// "    1. test_read10_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)"
	assertRE = regexp.MustCompile(`^\s+\d+\. \S+:\d+\s+- `)
)

// maxOutput bounds the lines kept per test; a failing MultipathIO test can list thousands of asserts.
const maxOutput = 40

// ParseVerbose parses the output of `iscsi-test-cu -v` (CUnit's basic interface in verbose mode):
//
//	Suite: Read10
//	  Test: Simple ...passed
//	  Test: BeyondEol ...    [FAILED] READ10 ... should have failed
//	FAILED
//	    1. test_read10_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
//
// A test that printed "[SKIPPED]" and then "passed" is Skipped, not Passed. A test whose verdict never
// came is Failed with Reason saying so.
func ParseVerbose(out string) *Report {
	r := &Report{}
	suite := ""
	var cur *TestResult // the test awaiting its verdict
	var last *TestResult
	finish := func(o Outcome) {
		if o == Passed && hasTag(cur.Output, "[SKIPPED]") {
			o = Skipped
		}
		cur.Outcome = o
		r.Tests = append(r.Tests, *cur)
		last = &r.Tests[len(r.Tests)-1]
		cur = nil
	}
	addOutput := func(t *TestResult, line string) {
		line = strings.TrimSpace(line)
		if line != "" && len(t.Output) < maxOutput {
			t.Output = append(t.Output, line)
		}
	}
	// addAfter keeps what a test's suite printed after the verdict (cleanup code, which CUnit does not
	// count against the test) with the last test, marked so, and without changing its outcome.
	addAfter := func(line string) {
		if last != nil && strings.TrimSpace(line) != "" {
			addOutput(last, "after verdict: "+line)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		if m := suiteRE.FindStringSubmatch(line); m != nil {
			if cur != nil {
				cur.Output = append(cur.Output, "(no verdict before the next suite)")
				finish(Failed)
			}
			suite, last = m[1], nil
			continue
		}
		if m := testRE.FindStringSubmatch(line); m != nil {
			if cur != nil {
				cur.Output = append(cur.Output, "(no verdict before the next test)")
				finish(Failed)
			}
			cur = &TestResult{Name: suite + "." + m[1]}
			last = nil
			line = m[2]
			if v, rest, ok := verdict(line); ok {
				finish(v)
				addAfter(rest)
				continue
			}
			addOutput(cur, line)
			continue
		}
		if m := summaryRE.FindStringSubmatch(line); m != nil {
			ran, _ := strconv.Atoi(m[2])
			passed, _ := strconv.Atoi(m[3])
			failed, _ := strconv.Atoi(m[4])
			r.Summary = &Summary{Ran: ran, Passed: passed, Failed: failed}
			continue
		}
		if strings.HasPrefix(line, "Run Summary:") {
			if cur != nil {
				cur.Output = append(cur.Output, "(no verdict before the run summary)")
				finish(Failed)
			}
			last = nil
			continue
		}
		switch {
		case cur != nil:
			if v, rest, ok := verdict(line); ok {
				finish(v)
				addAfter(rest)
				continue
			}
			addOutput(cur, line)
		case last != nil && last.Outcome == Failed && assertRE.MatchString(line):
			addOutput(last, line)
		case last != nil:
			addAfter(line)
		}
	}
	if cur != nil {
		cur.Output = append(cur.Output, "(output ended before the verdict)")
		finish(Failed)
	}
	for i := range r.Tests {
		r.Tests[i].Reason = reason(r.Tests[i].Output, r.Tests[i].Outcome)
	}
	return r
}

// verdict recognises CUnit's verdict, "passed" or "FAILED" at the start of a line (or right after the
// test header), and returns what follows it on the line: output of the suite's cleanup, printed after
// CUnit wrote the verdict without a newline.
func verdict(line string) (o Outcome, rest string, ok bool) {
	for _, v := range []struct {
		word string
		o    Outcome
	}{{"passed", Passed}, {"FAILED", Failed}} {
		if r, found := strings.CutPrefix(line, v.word); found && (r == "" || r[0] == ' ' || r[0] == '\t') {
			return v.o, r, true
		}
	}
	return "", "", false
}

func hasTag(lines []string, tag string) bool {
	for _, l := range lines {
		if strings.Contains(l, tag) {
			return true
		}
	}
	return false
}

// reason picks the message that explains o: the first [SKIPPED] or [FAILED] line, else the first line.
func reason(lines []string, o Outcome) string {
	tag := ""
	switch o {
	case Skipped:
		tag = "[SKIPPED]"
	case Failed:
		tag = "[FAILED]"
	default:
		return ""
	}
	for _, l := range lines {
		if _, msg, ok := strings.Cut(l, tag); ok {
			return strings.TrimSpace(msg)
		}
	}
	if len(lines) > 0 {
		return lines[0]
	}
	return ""
}

// ParseList parses `iscsi-test-cu --list` and returns the tests of family (e.g. "ALL") as "Suite.Test".
func ParseList(out, family string) []string {
	var tests []string
	for _, line := range strings.Split(out, "\n") {
		parts := strings.Split(strings.TrimSpace(line), ".")
		if len(parts) == 3 && parts[0] == family {
			tests = append(tests, parts[1]+"."+parts[2])
		}
	}
	return tests
}

// Overlay replaces the outcome of every test in r that other also ran, by other's. The conformance run
// uses it to take the MultipathIO suite from a second run that has two paths to the LU.
func (r *Report) Overlay(other *Report) {
	index := make(map[string]int, len(r.Tests))
	for i, t := range r.Tests {
		index[t.Name] = i
	}
	for _, t := range other.Tests {
		if i, ok := index[t.Name]; ok {
			r.Tests[i] = t
		} else {
			r.Tests = append(r.Tests, t)
		}
	}
}
