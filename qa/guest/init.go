package guest

// initScript is the guest's /init, run by busybox sh as PID 1. It mounts the API file systems, installs
// busybox's applets (package binaries of the same name win: --install never replaces a file), loads the
// modules listed in /etc/guest/modules in order, configures eth0 statically for QEMU's user networking
// (guest 10.0.2.15/24, host and gateway 10.0.2.2), runs /guest/script and prints the exit marker, then
// powers off. The markers carry the per-run token from /guest/token so that script output cannot forge
// them.
//
// Exit codes the init itself reports: 125 a module failed to load, 126 networking failed, 127 no script.
const initScript = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mkdir -p /dev/pts /dev/shm /run/lock /tmp /var/lib /var/run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/lock
mount -t tmpfs tmpfs /tmp
hostname guest
token=$(cat /guest/token 2>/dev/null)
finish() {
	sync
	echo "GUEST-EXIT-$token $1"
	poweroff -f
	sleep 5
	exit "$1"
}
kver=$(uname -r)
while read -r m; do
	[ -n "$m" ] || continue
	if ! out=$(insmod "/lib/modules/$kver/$m" 2>&1); then
		echo "GUEST-INIT: insmod $m failed: $out"
		finish 125
	fi
done < /etc/guest/modules
ip link set lo up
if ! { ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; }; then
	echo "GUEST-INIT: network setup failed"
	ip link
	finish 126
fi
[ -f /guest/script ] || { echo "GUEST-INIT: no /guest/script"; finish 127; }
echo "GUEST-BEGIN-$token"
cd /root
sh /guest/script </dev/null 2>&1
finish $?
`
