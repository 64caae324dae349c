//go:build qa

package raidinterop

import (
	"fmt"
	"strconv"
	"strings"
)

// vdisk is a host file attached to the guest as a virtio-blk disk.
type vdisk struct {
	path   string
	serial string // /sys/block/vdX/serial in the guest (at most 20 bytes): how the script finds it
	bs     int    // logical (and physical) block size the guest sees: 512 or 4096
}

// slotsPerBridge: disks go behind PCI-PCI bridges, 31 to a bridge, as bus 0 has too few slots for the
// ~100 disks of one boot.
const slotsPerBridge = 31

// qemuDiskArgs attaches disks with QEMU arguments of our own rather than guest.RunConfig.Disks, which has
// neither a block size option nor room for this many disks on bus 0. The drive options are the ones
// qa/guest uses (cache=none: the host files hold every write once QEMU exits).
func qemuDiskArgs(disks []vdisk) []string {
	var args []string
	for b := 0; b*slotsPerBridge < len(disks); b++ {
		args = append(args, "-device", fmt.Sprintf("pci-bridge,id=br%d,chassis_nr=%d,bus=pci.0", b, b+1))
	}
	for i, d := range disks {
		lbs := ""
		if d.bs == 4096 {
			lbs = ",logical_block_size=4096,physical_block_size=4096"
		}
		args = append(args,
			"-drive", fmt.Sprintf("if=none,id=x%d,file=%s,format=raw,cache=none,aio=threads", i, d.path),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=x%d,serial=%s,bus=br%d,addr=%#x%s", i, d.serial, i/slotsPerBridge, 1+i%slotsPerBridge, lbs))
	}
	return args
}

// mdadmConf is the guest's /etc/mdadm/mdadm.conf, without ARRAY lines, so "mdadm --assemble --scan"
// auto-assembles whatever it finds, which is the point. Checked with mdadm 4.2 in this guest: no conf file,
// "DEVICE /dev/vd*" alone, and this one all assemble every array of ours, the degraded ones too (auto-
// assembly starts a clean array that has enough members, without --run). DEVICE names the virtio disks
// rather than the default "partitions" (which reads /proc/partitions and works as well) to keep the scan
// to what we attached. HOMEHOST <ignore>: our set names carry the appliance's homehost ("opensan:NAME"),
// not the guest's hostname, and mdadm would name such foreign arrays /dev/md/opensan:NAME; with it they
// are /dev/md/NAME.
const mdadmConf = "DEVICE /dev/vd*\nHOMEHOST <ignore>\n"

// guestScript is run by busybox sh in the guest. It emits one machine-readable line per fact, each with a
// tag the host parses (see parseGuest); everything else is for the log. @GCREATE@ is replaced by the calls
// of gcreate for the arrays stock mdadm creates (part 2).
//
// Order: assemble our arrays (parts 1, 3 and 4) with md's rebuild speed throttled; read where md resumed
// the recoveries of part 4; restore the speed; record the arrays' state before anything else touches them;
// wait for the end of the recoveries; start md's check on the redundant complete ones (the recovered ones
// too); create stock mdadm's arrays (their initial syncs run meanwhile); hash ours; collect the checks;
// fill, hash and stop stock mdadm's arrays.
//
// Every process costs tens of milliseconds under TCG, so sysfs is read with the shell's own read, and the
// hashing runs as two jobs for the guest's two CPUs.
const guestScript = `set -u
mkdir -p /run/mdadm /etc/mdadm
# rd VAR FILE: VAR becomes FILE's first line, or "-". Not for /proc/sys, which busybox's read (a byte
# at a time) sees as its first byte.
rd() { eval "$1=-"; read -r "$1" 2>/dev/null < "$2"; }
step() { rd up /proc/uptime; echo "STEP $1 ${up%% *}"; }
# watchdog SECONDS STEP: every SECONDS until killed, say what md and blocked tasks are doing (diagnosis).
watchdog() {
	while sleep $1; do
		rd up /proc/uptime
		echo "WATCHDOG $2 still running at ${up%% *} s"
		cat /proc/mdstat
		for s in /sys/block/md*; do
			rd f $s/inflight
			[ "$f" = "0        0" ] || echo "WATCHDOG ${s##*/} inflight $f"
		done
		for p in /proc/[0-9]*; do
			grep -q '^State:.*D' $p/status 2>/dev/null && echo "WATCHDOG blocked: $(cat $p/comm 2>/dev/null) ($p)"
		done
		echo w > /proc/sysrq-trigger
		dmesg | tail -60 | sed 's/^/WATCHDOG dmesg /'
	done
}

# uuid_of MD: u becomes the set UUID in a member's superblock (mdadm --examine). Not from mdadm --detail:
# it reads the superblocks only when their creation time agrees with the kernel's, and its fallback (seen
# with mdadm 4.2) prints every 32-bit word of the UUID byte-swapped.
uuid_of() {
	u=-
	for m in /sys/block/$1/slaves/*; do
		mdadm --examine --export /dev/${m##*/} > /tmp/examine.$1 2>&1
		while IFS== read -r k v; do [ "$k" = MD_UUID ] && u=$v; done < /tmp/examine.$1
		return
	done
}

# rdevs MD PHASE: one line per member of MD: its disk, md's slot for it, recovery_start (sectors of it
# rebuilt; "none" when in sync) and state.
rdevs() {
	for m in /sys/block/$1/md/dev-*; do
		[ -e "$m" ] || continue
		rd sl $m/slot; rd rs $m/recovery_start; rd st $m/state
		echo "RDEV $2 $1 ${m##*/dev-} $sl $rs $st"
	done
}

# Disks by serial: V_<serial> is the disk's name.
for s in /sys/block/vd*; do
	rd sr $s/serial
	eval "V_$sr=${s##*/}"
	echo "VD ${s##*/} $sr"
done

# md's rebuild speed (KiB/s), throttled to a crawl until the recoveries md resumes have been looked at:
# md sets sync_completed to where its recovery thread starts and moves it, and the member's
# recovery_start, only at its next checkpoint, which the crawl does not reach in the seconds this takes.
smin=$(cat /proc/sys/dev/raid/speed_limit_min); smax=$(cat /proc/sys/dev/raid/speed_limit_max)
echo 1 > /proc/sys/dev/raid/speed_limit_min; echo 1 > /proc/sys/dev/raid/speed_limit_max

step assemble
mdadm --assemble --scan > /tmp/assemble 2>&1
echo "ASSEMBLE-RC $?"
sed 's/^/ASSEMBLE-OUT /' /tmp/assemble
cat /proc/mdstat

# Arrays mdadm assembled but did not start: start them with --run and say so; the host decides whether
# that was expected.
for s in /sys/block/md*; do
	[ -e "$s" ] || continue
	d=${s##*/}
	rd state $s/md/array_state
	if [ "$state" = inactive ]; then
		mdadm --run /dev/$d > /tmp/run 2>&1
		echo "RUN $d $?"
		sed "s/^/RUN-OUT $d /" /tmp/run
	fi
done

# Recoveries md resumed (an active member with a recovery_start), looked at first, before md's crawl has
# gone far: wait up to 10 s for the recovery thread to set its starting point ("START / END" with
# START > 0), then say where it is. Then md gets its speed back.
step recover-start
recovering=""
for s in /sys/block/md*; do
	[ -e "$s" ] || continue
	d=${s##*/}
	r=""
	for m in $s/md/dev-*; do
		rd sl $m/slot; rd rs $m/recovery_start
		[ "$sl" = none ] || [ "$sl" = - ] || [ "$rs" = none ] || [ "$rs" = - ] || r=1
	done
	[ -n "$r" ] || continue
	t=0
	while rd c $s/md/sync_completed; case "$c" in none|delayed|-|"0 / "*) true ;; *) false ;; esac; do
		t=$((t+1)); [ $t -lt 100 ] || break
		sleep 0.1
	done
	rd a $s/md/sync_action; rd deg $s/md/degraded
	echo "RECOVER $d $a $deg $c"
	rdevs $d start
	mdadm --detail /dev/$d > /tmp/detail 2>&1
	sed "s/^/RDETAIL start $d /" /tmp/detail
	recovering="$recovering $d"
done
cat /proc/mdstat
echo $smin > /proc/sys/dev/raid/speed_limit_min; echo $smax > /proc/sys/dev/raid/speed_limit_max
echo "md's rebuild speed back to $(cat /proc/sys/dev/raid/speed_limit_min) to $(cat /proc/sys/dev/raid/speed_limit_max) KiB/s"

# State right after assembly, before check: md resyncing or recovering a redundant array means we did not
# leave it clean and complete.
ours=""
for s in /sys/block/md*; do
	[ -e "$s" ] || continue
	d=${s##*/}
	uuid_of $d
	mdadm --detail /dev/$d > /tmp/detail 2>&1
	rd level $s/md/level; rd disks $s/md/raid_disks; rd deg $s/md/degraded; rd state $s/md/array_state
	rd action $s/md/sync_action; rd start $s/md/resync_start; rd size $s/size
	echo "MD $d $u $level $disks $deg $state $action $start $((size * 512))"
	sed "s/^/DETAIL $d /" /tmp/detail
	rdevs $d assembled
	ours="$ours $d"
done

# The recoveries md resumed: wait for their end (mdadm --wait, then sync_action idle) and report it.
# Their arrays are then complete, and hashed and checked with the others.
step recover
for d in $recovering; do
	rd up0 /proc/uptime
	mdadm --wait /dev/$d > /tmp/wait 2>&1
	rc=$?
	sed "s/^/WAIT-OUT $d /" /tmp/wait
	t=0
	while rd a /sys/block/$d/md/sync_action; [ "$a" != idle ]; do
		t=$((t+1)); [ $t -lt 1800 ] || { echo "TIMEOUT recover $d"; break; }
		sleep 0.1
	done
	rd up /proc/uptime
	rd l /sys/block/$d/md/last_sync_action; rd deg /sys/block/$d/md/degraded
	echo "RECOVERED $d $rc $a $l $deg ${up0%% *} ${up%% *}"
	rdevs $d end
	mdadm --detail /dev/$d > /tmp/detail 2>&1
	sed "s/^/RDETAIL end $d /" /tmp/detail
done

step check-start
checked=""
for d in $ours; do
	rd level /sys/block/$d/md/level; rd deg /sys/block/$d/md/degraded; rd action /sys/block/$d/md/sync_action
	case "$level" in raid1|raid4|raid5|raid6|raid10) ;; *) continue ;; esac
	[ "$deg" = 0 ] || continue
	[ "$action" = idle ] || { echo "NOCHECK $d $action"; continue; }
	echo check > /sys/block/$d/md/sync_action
	checked="$checked $d"
done

step create
created=""
gcreate() {
	tag=$1 level=$2 n=$3
	shift 3
	devs=""
	for sr in "$@"; do
		eval "v=\${V_$sr:-}"
		[ -n "$v" ] || { echo "GCREATED $tag 99 no disk with serial $sr"; return; }
		devs="$devs /dev/$v"
	done
	mdadm --create /dev/md$tag --run --level=$level --raid-devices=$n $devs > /tmp/create 2>&1
	rc=$?
	sed "s/^/GCREATE-OUT $tag /" /tmp/create
	echo "GCREATED $tag $rc"
	[ $rc -eq 0 ] && created="$created $tag"
}
@GCREATE@
cat /proc/mdstat

# twice FUNC ARGS...: FUNC on each argument, in two parallel jobs.
twice() {
	f=$1
	shift
	a="" b="" i=0
	for x in "$@"; do
		if [ $((i % 2)) -eq 0 ]; then a="$a $x"; else b="$b $x"; fi
		i=$((i+1))
	done
	( for x in $a; do $f $x; done ) &
	p1=$!
	( for x in $b; do $f $x; done ) &
	p2=$!
	wait $p1 $p2
}

# hash_md DEV: sha256 of the whole device. Degraded RAID5/6 are read with O_DIRECT in 4 MiB requests:
# buffered 4 KiB reads with md's 2 MiB readahead overrun its 256-stripe cache and crawl.
hash_md() {
	rd deg /sys/block/$1/md/degraded
	if [ "$deg" = - ] || [ "$deg" = 0 ]; then
		h=$(sha256sum /dev/$1)
	else
		h=$(dd if=/dev/$1 bs=4M iflag=direct 2>/dev/null | sha256sum)
	fi
	echo "HASH $1 ${h%% *}"
}

step hash
watchdog 90 hash &
wd=$!
twice hash_md $ours
kill $wd 2>/dev/null

step check
# Done when idle again after a check ran (last_sync_action says which ran).
t=0
for d in $checked; do
	while rd a /sys/block/$d/md/sync_action; rd l /sys/block/$d/md/last_sync_action; [ "$a" != idle ] || [ "$l" != check ]; do
		t=$((t+1)); [ $t -lt 1800 ] || { echo "TIMEOUT check $d"; break; }
		sleep 0.1
	done
	rd m /sys/block/$d/md/mismatch_cnt
	echo "MISMATCH $d $m $l"
done

# stock TAG: wait for the initial sync of /dev/mdTAG, fill it from /dev/urandom, hash it, stop it.
stock() {
	d=md$1
	t=0
	while rd a /sys/block/$d/md/sync_action; [ "$a" != idle ] && [ "$a" != - ]; do
		t=$((t+1)); [ $t -lt 1800 ] || { echo "TIMEOUT sync $d"; break; }
		sleep 0.1
	done
	rd size /sys/block/$d/size
	size=$((size * 512))
	bs=1048576
	[ $((size % bs)) -eq 0 ] || bs=65536
	dd if=/dev/urandom of=/dev/$d bs=$bs count=$((size / bs)) iflag=fullblock oflag=direct 2>/dev/null
	rc=$?
	sync
	h=$(sha256sum /dev/$d)
	uuid_of $d
	mdadm --detail /dev/$d > /tmp/gdetail.$1 2>&1
	echo "GHASH $1 ${h%% *} $size $rc $u"
	sed "s/^/GDETAIL $1 /" /tmp/gdetail.$1
	mdadm --stop /dev/$d 2>&1 | sed "s/^/GSTOP-OUT $1 /"
}

step stock
watchdog 90 stock &
wd=$!
twice stock $created
kill $wd 2>/dev/null

mdadm --stop --scan >/dev/null 2>&1
sync
step done
`

// gcreateLine is the script's call that creates one stock mdadm array on the disks with these serials.
func gcreateLine(tag string, level, n int, serials []string) string {
	return fmt.Sprintf("gcreate %s %d %d %s", tag, level, n, strings.Join(serials, " "))
}

// mdState is a "MD" line: an array as md assembled it, before anything else ran on it.
type mdState struct {
	dev, level                          string
	raidDisks, degraded                 int
	arrayState, syncAction, resyncStart string
	size                                int64
}

// rdevState is an "RDEV" line: one member of an md array as sysfs shows it.
type rdevState struct {
	disk, serial  string // serial from the VD lines
	slot          string // "none" for a spare
	recoveryStart string // sectors rebuilt, "none" when in sync
	state         string // md's flags: "in_sync", "spare", ...
}

// recoverState is a "RECOVER" line: a recovery md resumed, seen right after assembly.
type recoverState struct {
	action    string // sync_action
	degraded  int
	completed string // sync_completed, "START / END" in sectors
}

// recoveredState is a "RECOVERED" line: the end of a recovery.
type recoveredState struct {
	waitRC       int // mdadm --wait
	action, last string
	degraded     int
	seconds      float64 // mdadm --wait and the wait for idle took this long
}

// guestResult is what the script reported. md maps array UUIDs (mdadm's notation) to what the MD line
// said; the other per-array maps are by md device name ("md127").
type guestResult struct {
	assembleRC  int
	assembleOut []string
	md          map[string]mdState
	run         map[string]int // arrays started with mdadm --run: its exit status
	detail      map[string][]string
	hash        map[string]string
	mismatch    map[string]string // mismatch_cnt
	lastSync    map[string]string // last_sync_action when the check was over
	noCheck     map[string]string // sync_action when check should have started
	timeouts    []string
	steps       []string

	vd        map[string]string                 // serial -> disk name ("vdq")
	rdevs     map[string]map[string][]rdevState // phase ("assembled", "start", "end") -> md device -> members
	recover   map[string]recoverState           // recoveries md resumed
	recovered map[string]recoveredState
	rdetail   map[string]map[string][]string // phase ("start", "end") -> md device -> mdadm --detail

	// Stock mdadm's arrays, by tag.
	created     map[string]int // mdadm --create status
	createdOut  map[string][]string
	stockHash   map[string]string
	stockSize   map[string]int64
	stockDDRC   map[string]int
	stockUUID   map[string]string
	stockDetail map[string][]string
}

// parseGuest reads the script's output. Lines it does not know are ignored (they are for humans).
func parseGuest(out string) (*guestResult, error) {
	r := &guestResult{assembleRC: -1, md: map[string]mdState{}, run: map[string]int{}, detail: map[string][]string{},
		hash: map[string]string{}, mismatch: map[string]string{}, lastSync: map[string]string{}, noCheck: map[string]string{},
		created: map[string]int{}, createdOut: map[string][]string{}, stockHash: map[string]string{}, stockSize: map[string]int64{},
		stockDDRC: map[string]int{}, stockUUID: map[string]string{}, stockDetail: map[string][]string{},
		vd: map[string]string{}, rdevs: map[string]map[string][]rdevState{}, recover: map[string]recoverState{},
		recovered: map[string]recoveredState{}, rdetail: map[string]map[string][]string{}}
	var rdevLines [][]string // parsed once the VD lines are all in
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			return -1
		}
		return n
	}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		tag, rest, _ := strings.Cut(line, " ")
		f := strings.Fields(rest)
		switch tag {
		case "STEP":
			if len(f) > 0 {
				r.steps = append(r.steps, f[0])
			}
		case "ASSEMBLE-RC":
			r.assembleRC = atoi(rest)
		case "ASSEMBLE-OUT":
			r.assembleOut = append(r.assembleOut, rest)
		case "RUN":
			if len(f) == 2 {
				r.run[f[0]] = atoi(f[1])
			}
		case "MD":
			// dev uuid level raid_disks degraded array_state sync_action resync_start bytes
			if len(f) != 9 {
				return nil, fmt.Errorf("guest line %q: want 9 fields after MD", line)
			}
			size, _ := strconv.ParseInt(f[8], 10, 64)
			r.md[f[1]] = mdState{dev: f[0], level: f[2], raidDisks: atoi(f[3]), degraded: atoi(f[4]), arrayState: f[5],
				syncAction: f[6], resyncStart: f[7], size: size}
		case "DETAIL":
			d, l, _ := strings.Cut(rest, " ")
			r.detail[d] = append(r.detail[d], l)
		case "HASH":
			if len(f) == 2 {
				r.hash[f[0]] = f[1]
			}
		case "MISMATCH":
			if len(f) == 3 {
				r.mismatch[f[0]], r.lastSync[f[0]] = f[1], f[2]
			}
		case "NOCHECK":
			if len(f) == 2 {
				r.noCheck[f[0]] = f[1]
			}
		case "TIMEOUT":
			r.timeouts = append(r.timeouts, rest)
		case "GCREATED":
			if len(f) >= 2 {
				r.created[f[0]] = atoi(f[1])
			}
		case "GCREATE-OUT":
			t, l, _ := strings.Cut(rest, " ")
			r.createdOut[t] = append(r.createdOut[t], l)
		case "GHASH":
			if len(f) == 5 {
				r.stockHash[f[0]] = f[1]
				r.stockSize[f[0]], _ = strconv.ParseInt(f[2], 10, 64)
				r.stockDDRC[f[0]] = atoi(f[3])
				r.stockUUID[f[0]] = f[4]
			} else if len(f) == 4 {
				return nil, fmt.Errorf("guest line %q: no array UUID", line)
			}
		case "GDETAIL":
			t, l, _ := strings.Cut(rest, " ")
			r.stockDetail[t] = append(r.stockDetail[t], l)
		case "VD":
			if len(f) == 2 {
				r.vd[f[1]] = f[0]
			}
		case "RDEV":
			// phase md disk slot recovery_start state (empty when md has no flag for it)
			if len(f) != 5 && len(f) != 6 {
				return nil, fmt.Errorf("guest line %q: want 6 fields after RDEV", line)
			}
			rdevLines = append(rdevLines, append(f, "")[:6])
		case "RECOVER":
			// md sync_action degraded sync_completed ("START / END", or one word)
			if len(f) < 4 {
				return nil, fmt.Errorf("guest line %q: want md, sync_action, degraded and sync_completed after RECOVER", line)
			}
			r.recover[f[0]] = recoverState{action: f[1], degraded: atoi(f[2]), completed: strings.Join(f[3:], " ")}
		case "RECOVERED":
			// md wait-status sync_action last_sync_action degraded uptime-before uptime-after
			if len(f) != 7 {
				return nil, fmt.Errorf("guest line %q: want 7 fields after RECOVERED", line)
			}
			t0, _ := strconv.ParseFloat(f[5], 64)
			t1, _ := strconv.ParseFloat(f[6], 64)
			r.recovered[f[0]] = recoveredState{waitRC: atoi(f[1]), action: f[2], last: f[3], degraded: atoi(f[4]), seconds: t1 - t0}
		case "RDETAIL":
			// phase md line
			ph, rest, _ := strings.Cut(rest, " ")
			d, l, _ := strings.Cut(rest, " ")
			if r.rdetail[ph] == nil {
				r.rdetail[ph] = map[string][]string{}
			}
			r.rdetail[ph][d] = append(r.rdetail[ph][d], l)
		}
	}
	serials := map[string]string{}
	for sr, d := range r.vd {
		serials[d] = sr
	}
	for _, f := range rdevLines {
		if r.rdevs[f[0]] == nil {
			r.rdevs[f[0]] = map[string][]rdevState{}
		}
		r.rdevs[f[0]][f[1]] = append(r.rdevs[f[0]][f[1]], rdevState{disk: f[2], serial: serials[f[2]], slot: f[3], recoveryStart: f[4], state: f[5]})
	}
	return r, nil
}

// mdadmUUID writes a set UUID as mdadm prints it.
func mdadmUUID(u [16]byte) string {
	return fmt.Sprintf("%x:%x:%x:%x", u[0:4], u[4:8], u[8:12], u[12:16])
}
