package main

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// This file holds the parsers for the output of the measuring tools. They are pure: the commands are run
// by the groups.

// qemuImgBenchRE matches the last line of `qemu-img bench`: "Run completed in 1.323 seconds."
// qemu-img takes that time around the request loop only, after the image (the iSCSI login) is open.
var qemuImgBenchRE = regexp.MustCompile(`(?m)^Run completed in ([0-9]+(?:\.[0-9]+)?) seconds\.`)

// parseQemuImgBench returns the run time in seconds from `qemu-img bench` output.
func parseQemuImgBench(out string) (float64, error) {
	m := qemuImgBenchRE.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		return 0, fmt.Errorf("qemu-img bench output: want one \"Run completed in S seconds.\" line, found %d", len(m))
	}
	s, err := strconv.ParseFloat(m[0][1], 64)
	if err != nil {
		return 0, fmt.Errorf("qemu-img bench run time %q: %v", m[0][1], err)
	}
	if s <= 0 {
		// qemu-img prints milliseconds; a run under 0.5 ms rounds to 0 and gives no rate.
		return 0, fmt.Errorf("qemu-img bench run time %q: too short to measure", m[0][1])
	}
	return s, nil
}

// iscsiPerfAvgRE matches the summary iscsi-perf prints when its -t runtime ends:
// "iops average 23059 (90 MB/s)". Progress lines ("..., iops average 22210 (86 MB/s), in_flight 32") come
// before it on the same terminal line, separated by carriage returns, so only the last match counts.
var iscsiPerfAvgRE = regexp.MustCompile(`iops average ([0-9]+) \(([0-9]+) MB/s\)`)

// parseIscsiPerf returns the average IOPS of an iscsi-perf run (its MB/s is bytes/2^20 rounded down, too
// coarse for 4 KiB requests, so callers derive throughput from IOPS).
func parseIscsiPerf(out string) (float64, error) {
	if !strings.Contains(out, "finished.") {
		return 0, fmt.Errorf("iscsi-perf output: no \"finished.\" line; the run did not complete")
	}
	m := iscsiPerfAvgRE.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0, fmt.Errorf("iscsi-perf output: no \"iops average N (M MB/s)\" figure")
	}
	iops, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	if err != nil {
		return 0, fmt.Errorf("iscsi-perf iops average %q: %v", m[len(m)-1][1], err)
	}
	return iops, nil
}

// readCap16RE matches the block length line of iscsi-readcapacity16 (libiscsi 1.19):
// "LOGICAL BLOCK LENGTH IN BYTES:512".
var readCap16RE = regexp.MustCompile(`(?m)^LOGICAL BLOCK LENGTH IN BYTES:([0-9]+)\s*$`)

// parseReadCapacity16 returns the logical block size in bytes reported by iscsi-readcapacity16.
func parseReadCapacity16(out string) (int, error) {
	m := readCap16RE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("iscsi-readcapacity16 output: no \"LOGICAL BLOCK LENGTH IN BYTES:N\" line")
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 512 || n > 1<<16 || n&(n-1) != 0 {
		return 0, fmt.Errorf("iscsi-readcapacity16 logical block length %q: not a power of two in [512, 65536]", m[1])
	}
	return n, nil
}

// iperf3Report is the part of `iperf3 -c ... -J` output the bench reads.
type iperf3Report struct {
	End struct {
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// parseIperf3 returns the receiver throughput of an iperf3 JSON report, in MiB/s (2^20 bytes per second,
// the unit of the iSCSI figures).
func parseIperf3(out []byte) (float64, error) {
	var r iperf3Report
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 -J output: %v", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	bps := r.End.SumReceived.BitsPerSecond
	if !(bps > 0) || math.IsInf(bps, 0) || r.End.SumReceived.Seconds <= 0 {
		return 0, fmt.Errorf("iperf3 -J output: end.sum_received has no throughput (bits_per_second %v over %v s)", bps, r.End.SumReceived.Seconds)
	}
	return bps / 8 / (1 << 20), nil
}

// statusKB returns the value of a "Key:   1234 kB" line of a /proc/PID/status text, in KiB.
func statusKB(status, key string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status %s: value %q is not \"N kB\"", key, strings.TrimSpace(v))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc status %s: value %q is not \"N kB\"", key, strings.TrimSpace(v))
		}
		return n, nil
	}
	return 0, fmt.Errorf("/proc status: no %s line", key)
}
