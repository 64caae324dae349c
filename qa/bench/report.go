package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Table is what a figure group returns: per-round samples of each figure for ours and the peer.
type Table struct {
	// Title heads the section; Intro is a paragraph under it (what is measured, how).
	Title, Intro string
	// Ours and Peer name the two columns: "gatewayd" and "tgt", or a package and a library.
	Ours, Peer string
	Rows       []Row
	// Notes are bullet points under the table (context figures, caveats, missing pieces).
	Notes []string
	// Commands are the exact command lines run: for each key (a setup step, or a figure on a system),
	// the last one, in the order the keys first came up.
	Commands []string
	cmdKeys  []string
	// Err is set when the group failed; the rows it has are still shown.
	Err string
}

// Row is one figure.
type Row struct {
	Figure string
	// Unit of the samples: "IOPS", "MiB/s", "GB/s" or "%".
	Unit       string
	Ours, Peer Series
	Goal       Goal
}

// Series is the samples of one figure on one system, one per measured round; Err says why some or all
// are missing.
type Series struct {
	Samples []float64
	Err     string
}

// Goal is what a row must reach; the zero Goal means the row is for information only.
type Goal struct {
	// Ratio is the least median(ours)/median(peer).
	Ratio float64
	// Ours is the least median(ours), in the row's unit.
	Ours float64
}

// Summary is the median and range of a series.
type Summary struct {
	N                int
	Median, Min, Max float64
}

// Summarize returns the median, min and max of samples (N is 0 for none).
func Summarize(samples []float64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{N: n, Median: med, Min: s[0], Max: s[n-1]}
}

// addCommand records cmdline as the command line of key, replacing the one recorded before (request
// counts change from the warm-up to the measured rounds).
func (t *Table) addCommand(key, cmdline string) {
	if i := slices.Index(t.cmdKeys, key); i >= 0 {
		t.Commands[i] = cmdline
		return
	}
	t.cmdKeys = append(t.cmdKeys, key)
	t.Commands = append(t.Commands, cmdline)
}

// Report is the whole BENCHMARKS.md.
type Report struct {
	Started, Finished time.Time
	Machine           Machine
	LoadEnd           string
	Args              []string
	// Tags are the build tags the bench was built with ("isal"), for the command line in the report.
	Tags   string
	Rounds int
	Secs   float64
	Tables []*Table
	// Incomplete, if set, says why the report lacks figures.
	Incomplete string
}

// formatValue prints v with a precision that suits its size: no decimals from 100 up.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// cell renders "median (min–max)" of a series, or why it is missing.
func (s Series) cell(unit string) string {
	sum := Summarize(s.Samples)
	if sum.N == 0 {
		if s.Err != "" {
			return "failed (see Failures)"
		}
		return "—"
	}
	c := fmt.Sprintf("%s %s", formatValue(sum.Median), unit)
	if sum.N > 1 {
		c += fmt.Sprintf(" (%s–%s)", formatValue(sum.Min), formatValue(sum.Max))
	}
	if s.Err != "" {
		c += " (some rounds failed)"
	}
	return c
}

// ratio returns median(ours)/median(peer), or NaN when either is missing.
func (r Row) ratio() float64 {
	o, p := Summarize(r.Ours.Samples), Summarize(r.Peer.Samples)
	if o.N == 0 || p.N == 0 || p.Median == 0 {
		return math.NaN()
	}
	return o.Median / p.Median
}

// roundRatios returns the least and greatest ours/peer ratio within one round (the two measured back to
// back, so under the same outside load). ok is false unless both series have a sample for every round.
func (r Row) roundRatios(rounds int) (lo, hi float64, ok bool) {
	o, p := r.Ours.Samples, r.Peer.Samples
	if len(o) < 2 || len(o) != rounds || len(p) != rounds || r.Ours.Err != "" || r.Peer.Err != "" {
		return 0, 0, false
	}
	lo, hi = math.Inf(1), math.Inf(-1)
	for i := range o {
		if p[i] <= 0 {
			return 0, 0, false
		}
		q := o[i] / p[i]
		lo, hi = min(lo, q), max(hi, q)
	}
	return lo, hi, true
}

// goalCells renders the goal and whether the medians meet it.
func (r Row) goalCells(ours string) (goal, met string) {
	var goals []string
	ok, known := true, true
	if r.Goal.Ratio > 0 {
		goals = append(goals, fmt.Sprintf("≥ %sx", formatRatio(r.Goal.Ratio)))
		if q := r.ratio(); math.IsNaN(q) {
			known = false
		} else if q < r.Goal.Ratio {
			ok = false
		}
	}
	if r.Goal.Ours > 0 {
		goals = append(goals, fmt.Sprintf("%s ≥ %s %s", ours, formatValue(r.Goal.Ours), r.Unit))
		if o := Summarize(r.Ours.Samples); o.N == 0 {
			known = false
		} else if o.Median < r.Goal.Ours {
			ok = false
		}
	}
	switch {
	case len(goals) == 0:
		return "—", ""
	case !ok:
		return strings.Join(goals, ", "), "**no**"
	case !known:
		return strings.Join(goals, ", "), "?"
	default:
		return strings.Join(goals, ", "), "yes"
	}
}

// formatRatio prints a goal ratio with up to two decimals and no trailing zeros: 1.5, 0.64, 2.
func formatRatio(q float64) string {
	return strconv.FormatFloat(math.Round(q*100)/100, 'f', -1, 64)
}

// Markdown renders the report.
func (rep *Report) Markdown() string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	run := "go run ./qa/bench"
	if rep.Tags != "" {
		run = "go run -tags " + rep.Tags + " ./qa/bench"
	}
	fmt.Fprintf(&b, "Generated by `%s %s` on %s (took %s). Do not edit by hand: rerun the bench.\n\n",
		run, strings.Join(rep.Args, " "), rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Finished.Sub(rep.Started).Round(time.Second))
	if rep.Incomplete != "" {
		fmt.Fprintf(&b, "**Incomplete: %s.**\n\n", rep.Incomplete)
	}
	fmt.Fprintf(&b, "Each figure was measured %d times per system after one unmeasured warm-up run, the systems "+
		"taking turns (the order flips every round) so that load from elsewhere on the machine hits both alike. "+
		"Cells give the median and, in brackets, the min–max over the rounds; one measurement lasts about %s s. "+
		"Ratios are of the medians; in brackets, the least and greatest ratio within one round.\n\n", rep.Rounds, formatValue(rep.Secs))
	fmt.Fprintf(&b, "## Machine\n\n")
	fmt.Fprintf(&b, "- CPUs: %d (nproc), %s\n", m.CPUs, m.CPUModel)
	fmt.Fprintf(&b, "- Kernel: %s\n", m.Kernel)
	fmt.Fprintf(&b, "- Go: %s\n", m.Go)
	fmt.Fprintf(&b, "- Commit: %s\n", m.Commit)
	for _, t := range m.Tools {
		fmt.Fprintf(&b, "- %s\n", t)
	}
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min): %s at the start, %s at the end", m.LoadStart, rep.LoadEnd)
	fmt.Fprintf(&b, " (the bench itself keeps about 2 busy; much more means a shared, noisy machine)\n")

	for _, t := range rep.Tables {
		fmt.Fprintf(&b, "\n## %s\n\n", t.Title)
		if t.Intro != "" {
			fmt.Fprintf(&b, "%s\n\n", t.Intro)
		}
		if t.Err != "" {
			fmt.Fprintf(&b, "**This group failed:**\n\n```\n%s\n```\n\n", t.Err)
		}
		if len(t.Rows) > 0 {
			fmt.Fprintf(&b, "| Figure | %s | %s | %s/%s | Goal | Met |\n", t.Ours, t.Peer, t.Ours, t.Peer)
			fmt.Fprintf(&b, "|---|---:|---:|---:|---|---|\n")
			for _, r := range t.Rows {
				q := "—"
				if v := r.ratio(); !math.IsNaN(v) {
					q = fmt.Sprintf("%.2fx", v)
					if lo, hi, ok := r.roundRatios(rep.Rounds); ok {
						q += fmt.Sprintf(" (%.2f–%.2f)", lo, hi)
					}
				}
				goal, met := r.goalCells(t.Ours)
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Figure, r.Ours.cell(r.Unit), r.Peer.cell(r.Unit), q, goal, met)
			}
			b.WriteString("\n")
		}
		for _, n := range t.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		if len(t.Notes) > 0 {
			b.WriteString("\n")
		}
		// The same failure (a target that did not start) usually hits every row: print each text once.
		var errs []string
		where := map[string][]string{}
		for _, r := range t.Rows {
			for _, s := range []struct {
				who string
				s   Series
			}{{t.Ours, r.Ours}, {t.Peer, r.Peer}} {
				if s.s.Err != "" {
					if where[s.s.Err] == nil {
						errs = append(errs, s.s.Err)
					}
					where[s.s.Err] = append(where[s.s.Err], r.Figure+" on "+s.who)
				}
			}
		}
		if len(errs) > 0 {
			b.WriteString("Failures:\n\n")
			for _, e := range errs {
				fmt.Fprintf(&b, "- %s:\n\n  ```\n  %s\n  ```\n", strings.Join(where[e], "; "), strings.ReplaceAll(strings.TrimSpace(e), "\n", "\n  "))
			}
			b.WriteString("\n")
		}
		if len(t.Rows) > 0 {
			fmt.Fprintf(&b, "<details><summary>Samples per round</summary>\n\n")
			for _, r := range t.Rows {
				fmt.Fprintf(&b, "- %s, %s: %s; %s: %s\n", r.Figure, t.Ours, samples(r.Ours.Samples), t.Peer, samples(r.Peer.Samples))
			}
			fmt.Fprintf(&b, "\n</details>\n\n")
		}
		if len(t.Commands) > 0 {
			fmt.Fprintf(&b, "Command lines, as run:\n\n```\n%s\n```\n", strings.Join(t.Commands, "\n"))
		}
	}
	return b.String()
}

func samples(s []float64) string {
	if len(s) == 0 {
		return "none"
	}
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = formatValue(v)
	}
	return strings.Join(parts, ", ")
}

// oneLine returns the first line of s, cut to n bytes, with pipes escaped for a Markdown table cell.
func oneLine(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}
