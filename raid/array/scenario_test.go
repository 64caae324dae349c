package array

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"opensan/gateway/block"
	"opensan/raid/disktest"
	"opensan/raid/md"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/scenarios")

// Scenario files (testdata/scenarios/*.txt) drive the array's state machine: a command line, "----", the
// expected output, a blank line. Members are crashable memory disks behind fault injectors.
//
//	create level=5 disks=4 [bitmap] [bs=4096]   new array (chunk 16 KiB), initial sync awaited
//	write off=N len=N fill=X                    write bytes X (hex) at byte N; the model follows
//	read off=N len=N                            compare with the model
//	fail disk=I | heal disk=I                   member I disappears / comes back
//	flush | stop | check | state                array Flush, Close, Check, state summary
//	crash [keep]                                power loss on every member (keep: unflushed writes survive)
//	assemble [disks=I,J,...] [force]            Assemble from those members (all by default)
//	roles disk=I                                the member's superblock: events, state and dev_roles
type scenario struct {
	t       *testing.T
	crash   []*disktest.Crashable
	faulty  []*disktest.Faulty
	a       *Array
	model   []byte
	durable []byte // model as of the last flush
}

func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/scenarios/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenario files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScenario(t, f) })
	}
}

func runScenario(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &scenario{t: t}
	defer func() {
		if s.a != nil {
			s.a.Close()
		}
	}()
	var out strings.Builder
	blocks := strings.Split(strings.TrimRight(string(data), "\n")+"\n", "\n\n")
	for _, blk := range blocks {
		blk = strings.Trim(blk, "\n")
		if blk == "" {
			continue
		}
		cmd, want, ok := strings.Cut(blk, "\n----")
		var comments []string
		lines := strings.Split(cmd, "\n")
		for _, l := range lines[:len(lines)-1] {
			comments = append(comments, l)
		}
		cmd = lines[len(lines)-1]
		if !ok {
			t.Fatalf("%s: command %q without ----", path, cmd)
		}
		got := s.do(cmd)
		want = strings.TrimPrefix(want, "\n")
		if *rewrite {
			for _, c := range comments {
				out.WriteString(c + "\n")
			}
			fmt.Fprintf(&out, "%s\n----\n%s\n\n", cmd, got)
			continue
		}
		if got != want {
			t.Fatalf("%s: %s\n got: %s\nwant: %s", path, cmd, got, want)
		}
	}
	if *rewrite {
		os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644)
	}
}

// errText names an error by its sentinel, so expected outputs stay one line.
func errText(err error) string {
	for _, e := range []error{ErrFailed, ErrDirtyDegraded, ErrTooDegraded, ErrNoMembers, ErrSeveralSets, md.ErrUnsupported} {
		if errors.Is(err, e) {
			return "error: " + e.Error()
		}
	}
	return "error: " + strings.SplitN(err.Error(), "\n", 2)[0]
}

func args(fields []string) map[string]string {
	m := map[string]string{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

func num(s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		panic(err)
	}
	return n * mult
}

func (s *scenario) devs() []block.Device {
	out := make([]block.Device, len(s.faulty))
	for i, f := range s.faulty {
		out[i] = f
	}
	return out
}

func (s *scenario) do(line string) string {
	f := strings.Fields(line)
	a := args(f[1:])
	switch f[0] {
	case "create":
		n := int(num(a["disks"]))
		bs := 512
		if a["bs"] != "" {
			bs = int(num(a["bs"]))
		}
		s.crash, s.faulty = make([]*disktest.Crashable, n), make([]*disktest.Faulty, n)
		for i := range n {
			s.crash[i] = disktest.NewCrashable(64<<10+16*testChunk, bs)
			s.faulty[i] = disktest.NewFaulty(s.crash[i], fmt.Sprint(i))
		}
		_, bitmap := a["bitmap"]
		arr, err := Create(s.devs(), CreateConfig{Level: int(num(a["level"])), Chunk: testChunk, Name: "scenario",
			DataOffset: 64 << 10, Bitmap: bitmap, BitmapChunk: testChunk, BitmapDelay: time.Hour, Now: fixedClock})
		if err != nil {
			return errText(err)
		}
		arr.WaitSync()
		s.a = arr
		s.model, s.durable = make([]byte, arr.Size()), make([]byte, arr.Size())
		return fmt.Sprintf("size=%d", arr.Size())
	case "write":
		off, n := num(a["off"]), num(a["len"])
		p := bytes.Repeat([]byte{byte(num("0x" + a["fill"]))}, int(n))
		if _, err := s.a.WriteAt(p, off); err != nil {
			return errText(err)
		}
		copy(s.model[off:], p)
		return "ok"
	case "read":
		off, n := num(a["off"]), num(a["len"])
		p := make([]byte, n)
		if _, err := s.a.ReadAt(p, off); err != nil {
			return errText(err)
		}
		for i := range p {
			if p[i] != s.model[off+int64(i)] {
				return fmt.Sprintf("mismatch at byte %d: %#x, want %#x", off+int64(i), p[i], s.model[off+int64(i)])
			}
		}
		return "ok"
	case "fail":
		s.faulty[num(a["disk"])].Vanish()
		return "ok"
	case "heal":
		s.faulty[num(a["disk"])].Heal()
		return "ok"
	case "flush":
		if err := s.a.Flush(); err != nil {
			return errText(err)
		}
		copy(s.durable, s.model)
		return "ok"
	case "stop":
		err := s.a.Close()
		s.a = nil
		if err != nil {
			return errText(err)
		}
		copy(s.durable, s.model)
		return "ok"
	case "check":
		bad, err := s.a.Check()
		if err != nil {
			return errText(err)
		}
		return fmt.Sprintf("mismatches=%d", bad)
	case "state":
		var faulty []string
		for i := range s.a.Disks() {
			if s.a.Faulty(i) {
				faulty = append(faulty, fmt.Sprint(i))
			}
		}
		return fmt.Sprintf("degraded=%d faulty=[%s] in-sync=%v events=%d", s.a.Degraded(), strings.Join(faulty, " "), s.a.InSync(), s.a.Events())
	case "crash":
		_, keep := a["keep"]
		for i, c := range s.crash {
			s.crash[i] = c.Crash(func(int) bool { return keep })
			s.faulty[i] = disktest.NewFaulty(s.crash[i], fmt.Sprint(i))
		}
		if s.a != nil {
			s.a.Close() // on the dead disks: it fails, and changes nothing on the images taken
			s.a = nil
		}
		if !keep {
			copy(s.model, s.durable)
		}
		return "ok"
	case "assemble":
		devs := s.devs()
		if a["disks"] != "" {
			devs = nil
			for _, d := range strings.Split(a["disks"], ",") {
				devs = append(devs, s.faulty[num(d)])
			}
		}
		_, force := a["force"]
		arr, err := Assemble(devs, AssembleConfig{BitmapDelay: time.Hour, Force: force, Now: fixedClock})
		if err != nil {
			return errText(err)
		}
		arr.WaitSync()
		s.a = arr
		return fmt.Sprintf("degraded=%d resynced=%d", arr.Degraded(), arr.Resynced())
	case "roles":
		found, err := Examine(s.faulty[num(a["disk"])])
		if err != nil {
			return errText(err)
		}
		sb := found.Super
		var roles []string
		for _, r := range sb.DevRoles[:sb.RaidDisks] {
			switch r {
			case md.RoleFaulty:
				roles = append(roles, "faulty")
			case md.RoleSpare:
				roles = append(roles, "spare")
			default:
				roles = append(roles, fmt.Sprint(r))
			}
		}
		state := "clean"
		if !sb.Clean() {
			state = "dirty"
		}
		return fmt.Sprintf("events=%d %s roles=[%s]", sb.Events, state, strings.Join(roles, " "))
	}
	s.t.Fatalf("unknown command %q", line)
	return ""
}
