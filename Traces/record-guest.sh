#!/usr/bin/env bash
# Records a real guest block-I/O trace for qcow2sim (issue 5, item 4).
#
# Boots Debian's own kernel under qemu-system-x86_64 (TCG, no KVM) with a busybox initramfs,
# makes an ext4 filesystem *inside the guest* on an empty qcow2 image attached as virtio-blk,
# runs a fixed, seeded filesystem workload, and records the same run three ways:
#   1. QEMU's own trace events (log backend)                 -> guest-ext4.qemu-trace.log.xz
#   2. a blklogwrites filter node directly above the qcow2   -> guest-ext4.logwrites.tsv
#      node (the only way QEMU 7.2 shows flushes/discards,
#      which have no trace events of their own)
#   3. blktrace inside the guest on /dev/vda                  -> guest-ext4.blktrace.0.xz
#                                                               (+ guest-ext4.blkparse.txt.xz,
#                                                               blkparse's default text output)
# and, merged from 1 and 2 by Traces/guest-trace-to-csv.pl, the qcow2 node's complete request
# stream in qcow2sim's native format                          -> guest-ext4.trace.csv
# plus the guest console (guest-ext4.console.log) and the image/run parameters
# (guest-ext4.image.txt). Everything goes to the directory this script lives in (Traces/).
#
# Packages (Debian 12, installed with apt-get when missing): qemu-system-x86 qemu-utils
# linux-image-amd64 busybox-static blktrace e2fsprogs cpio xz-utils (perl-base and coreutils
# are essential). Runs as root or via sudo for apt-get only; the rest runs as the caller.
#
# Usage: Traces/record-guest.sh            (env: GUEST_TIMEOUT=seconds, default 2400)
# Idempotent: every output file is rewritten; temp work lives in a mktemp dir under /tmp.
set -euo pipefail

OUT=$(cd "$(dirname "$0")" && pwd)
NAME=guest-ext4
SEED=20250527                 # workload seed (Park-Miller LCG inside the guest)
DISK_SIZE=8G                  # virtual size of the traced qcow2 image
CLUSTER_SIZE=65536            # qcow2 cluster size (QEMU default)
OUTDISK_SIZE=64M              # raw scratch disk the guest writes its blktrace files to
MARK_BASE=15360               # phase markers: 4 KiB direct reads of /dev/vdb block MARK_BASE+phase
GUEST_TIMEOUT=${GUEST_TIMEOUT:-2400}

# ---------------------------------------------------------------------------------------------
# 0. Packages
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v blktrace >/dev/null || need+=(blktrace)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# Newest installed Debian kernel that has its modules.
KVER=""
for k in $(ls /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | sort -V); do
  [[ -f /lib/modules/$k/modules.dep ]] && KVER=$k
done
[[ -n $KVER ]] || { echo "no kernel with modules under /lib/modules" >&2; exit 1; }
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[[ -r $KERNEL ]] || { echo "$KERNEL not readable" >&2; exit 1; }

WORK=$(mktemp -d /tmp/qcow2sim-record.XXXXXX)
[[ -n ${KEEP_WORK:-} ]] || trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,sbin,etc,proc,sys,dev,mnt,out,tmp,lib/modules}

# ---------------------------------------------------------------------------------------------
# 1. Initramfs: busybox, kernel modules (with dependencies), mke2fs and blktrace (+ their libs)
cp /bin/busybox "$ROOT/bin/busybox"

declare -A seen=()
modlist=()
add_module() {               # $1: path relative to $MODDIR, as in modules.dep
  local rel=$1 line d
  [[ -n ${seen[$rel]:-} ]] && return
  seen[$rel]=1
  line=$(grep -m1 "^$rel:" "$MODDIR/modules.dep")
  for d in ${line#*:}; do add_module "$d"; done
  modlist+=("$rel")
}
for m in virtio_pci virtio_blk crc32c_generic ext4; do
  rel=$(grep -m1 -E "(^|/)$m\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | cut -d: -f1)
  [[ -n $rel ]] || { echo "module $m not found in $MODDIR" >&2; exit 1; }
  add_module "$rel"
done
: > "$ROOT/modules.order"
for rel in "${modlist[@]}"; do
  cp "$MODDIR/$rel" "$ROOT/lib/modules/"
  echo "/lib/modules/$(basename "$rel")" >> "$ROOT/modules.order"
done

copy_with_libs() {           # copy a dynamically linked binary and its shared libraries
  local bin=$1 lib
  cp -L "$bin" "$ROOT/sbin/"
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
}
copy_with_libs "$(command -v mke2fs)"
copy_with_libs "$(command -v blktrace)"
cp /etc/mke2fs.conf "$ROOT/etc/"

# 1 MiB deterministic data pattern the workload copies from.
seq 1 200000 > "$ROOT/pattern"; truncate -s 1048576 "$ROOT/pattern"

cat > "$ROOT/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
for m in $(cat /modules.order); do insmod "$m" || echo "insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do sleep 0.2; i=$((i+1)); [ $i -gt 100 ] && break; done
for d in vda vdb; do echo "$d serial=$(cat /sys/block/$d/serial 2>/dev/null)"; done
. /workload.sh
INIT
chmod +x "$ROOT/init"

cat > "$ROOT/workload.sh" <<'WORKLOAD'
# Runs inside the guest (busybox ash). Deterministic: the plan comes from a Park-Miller LCG.
SEED=@SEED@
MARK_BASE=@MARK_BASE@
NAME=@NAME@
up() { cut -d' ' -f1 /proc/uptime; }
mark() {  # phase marker: console line + one 4 KiB O_DIRECT read of /dev/vdb (shows in QEMU trace)
  echo "PHASE $1 $2 uptime=$(up)"
  dd if=/dev/vdb of=/dev/null bs=4096 skip=$((MARK_BASE + $1)) count=1 iflag=direct 2>/dev/null
}
fill() {  # fill FILE BYTES [append]: copy BYTES bytes of the 1 MiB pattern (repeated)
  n=$2
  if [ "$3" = append ]; then exec 3>>"$1"; else exec 3>"$1"; fi
  while [ "$n" -gt 0 ]; do
    c=$n; [ "$c" -gt 1048576 ] && c=1048576
    head -c "$c" /pattern >&3
    n=$((n - c))
  done
  exec 3>&-
}

fail() { echo "WORKLOAD-FAILED: $*"; poweroff -f; sleep 60; }
/sbin/blktrace -d /dev/vda -D /out -o "$NAME" -b 1024 -n 16 > /out/blktrace.stdout 2>&1 &
BT=$!
sleep 2
mark 0 mkfs
/sbin/mke2fs -q -F -t ext4 -U 5eed5eed-0000-4000-8000-000000000001 \
  -E lazy_itable_init=0,lazy_journal_init=0,hash_seed=5eed5eed-0000-4000-8000-000000000002 \
  /dev/vda || fail "mke2fs"
mount -t ext4 -o noinit_itable /dev/vda /mnt || fail "mount"
mkdir -p /mnt/small /mnt/medium /mnt/large
i=0; while [ $i -lt 24 ]; do mkdir -p /mnt/small/d$(printf %02d $i); i=$((i+1)); done

awk -v seed="$SEED" '
function rnd(n) { x = (x * 16807) % 2147483647; return x % n }
BEGIN {
  x = seed % 2147483646 + 1
  print "phase 1 create-small"
  for (i = 0; i < 480; i++) printf "create small/d%02d/f%03d %d\n", i % 24, i, 512 + rnd(32768)
  print "sync"
  print "phase 2 create-medium"
  for (i = 0; i < 24; i++) printf "create medium/m%02d %d\n", i, 65536 + rnd(1048576)
  print "sync"
  print "phase 3 create-large"
  printf "create large/l0 %d\n", 4194304
  printf "create large/l1 %d\n", 8388608
  printf "create large/l2 %d\n", 12582912
  print "sync"
  print "phase 4 append"
  for (i = 0; i < 120; i++) { j = rnd(480); printf "append small/d%02d/f%03d %d\n", j % 24, j, 4096 + rnd(28672) }
  for (i = 0; i < 12; i++) { j = rnd(24); printf "append medium/m%02d %d\n", j, 65536 + rnd(262144) }
  printf "append large/l0 %d\n", 1048576
  printf "append large/l2 %d\n", 1048576
  print "sync"
  print "phase 5 overwrite-in-place"
  for (i = 0; i < 32; i++) printf "overwrite large/l1 %d %d\n", rnd(2048 - 16), 1 + rnd(16)
  print "sync"
  print "phase 6 fsync-log"
  for (i = 0; i < 100; i++) printf "logappend medium/journal.log %d\n", 1 + rnd(8)
  for (i = 0; i < 16; i++) printf "fsyncwrite large/l0 %d %d\n", rnd(1024 - 4), 1 + rnd(4)
  print "phase 7 copy-tree"
  print "copy small copy-small"
  print "copy medium copy-medium"
  print "sync"
  print "phase 8 delete"
  for (i = 0; i < 480; i += 2) printf "rm small/d%02d/f%03d\n", i % 24, i
  for (i = 0; i < 24; i += 3) printf "rm medium/m%02d\n", i
  print "rm large/l1"
  print "rmtree copy-medium"
  print "sync"
  print "phase 9 fstrim"
  print "fstrim"
  print "phase 10 read-back"
  print "readall"
  print "phase 11 reuse-space"
  for (i = 0; i < 80; i++) printf "create small/d%02d/n%03d %d\n", i % 24, i, 512 + rnd(65536)
  printf "create large/l3 %d\n", 6291456
  print "truncate large/l2 2097152"
  print "sync"
  print "phase 12 unmount"
}' > /plan

cd /mnt
while read -r op a b c; do
  case $op in
    phase)     mark "$a" "$b" ;;
    create)    fill "$a" "$b" ;;
    append)    fill "$a" "$b" append ;;
    overwrite) dd if=/pattern of="$a" bs=4096 seek="$b" count="$c" conv=notrunc 2>/dev/null ;;
    logappend) dd if=/pattern of="$a" bs=512 count="$b" oflag=append conv=notrunc,fsync 2>/dev/null ;;
    fsyncwrite) dd if=/pattern of="$a" bs=4096 seek="$b" count="$c" conv=notrunc,fsync 2>/dev/null ;;
    copy)      cp -a "$a" "$b" ;;
    rm)        rm -f "$a" ;;
    rmtree)    rm -rf "$a" ;;
    truncate)  truncate -s "$b" "$a" ;;
    sync)      sync ;;
    fstrim)    fstrim -v /mnt || fail "fstrim" ;;
    readall)   sync; echo 3 > /proc/sys/vm/drop_caches; find /mnt -type f | xargs cat > /dev/null ;;
  esac
done < /plan
cd /
df -k /mnt
umount /mnt || fail "umount"
mark 13 done
sleep 2
kill -INT "$BT"; wait "$BT"
cat /out/blktrace.stdout
cp /plan /out/plan.txt
echo "tar of /out:"; ls -l /out
tar -cf /dev/vdb -C /out .
sync
echo "WORKLOAD-COMPLETE uptime=$(up)"
poweroff -f
WORKLOAD
sed -i -e "s/@SEED@/$SEED/" -e "s/@MARK_BASE@/$MARK_BASE/" -e "s/@NAME@/$NAME/" "$ROOT/workload.sh"

(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$WORK/initramfs.cpio.gz"

# ---------------------------------------------------------------------------------------------
# 2. Disks and trace-event list
IMG=$WORK/$NAME.qcow2
IMG_CMD="qemu-img create -f qcow2 -o cluster_size=$CLUSTER_SIZE $NAME.qcow2 $DISK_SIZE"
(cd "$WORK" && $IMG_CMD >/dev/null)
qemu-img info "$IMG" > "$WORK/img-info-before.txt"
truncate -s "$OUTDISK_SIZE" "$WORK/out.raw"
truncate -s 1G "$WORK/writes.log"        # sparse; blklogwrites' log (entries + copies of data)

cat > "$WORK/events" <<'EV'
bdrv_open_common
blk_root_attach
blk_co_preadv
blk_co_pwritev
bdrv_co_preadv_part
bdrv_co_pwritev_part
bdrv_co_pwrite_zeroes
virtio_blk_handle_read
virtio_blk_handle_write
virtio_blk_submit_multireq
qcow2_*
EV

QEMU_ARGS=(
  -nodefaults -no-user-config -machine pc,accel=tcg -smp 1 -m 256M
  -display none -no-reboot -msg timestamp=on
  -kernel "$KERNEL" -initrd "$WORK/initramfs.cpio.gz"
  -append "console=ttyS0 quiet panic=-1"
  -serial "file:$WORK/console.log"
  -blockdev "driver=file,node-name=img-file,filename=$IMG,discard=unmap"
  -blockdev "driver=qcow2,node-name=img-qcow2,file=img-file,discard=unmap"
  -blockdev "driver=file,node-name=log-file,filename=$WORK/writes.log"
  -blockdev "driver=blklogwrites,node-name=img-logw,file=img-qcow2,log=log-file,discard=unmap"
  -device "virtio-blk-pci,drive=img-logw,serial=qcow2sim-vda"
  -blockdev "driver=file,node-name=out-file,filename=$WORK/out.raw"
  -blockdev "driver=raw,node-name=out-raw,file=out-file"
  -device "virtio-blk-pci,drive=out-raw,serial=qcow2sim-vdb"
  -trace "events=$WORK/events" -trace "file=$WORK/qemu-trace.log"
)

# ---------------------------------------------------------------------------------------------
# 3. Run the guest
echo "booting $KERNEL under TCG (timeout ${GUEST_TIMEOUT}s)..." >&2
start=$(date +%s)
rc=0
timeout "$GUEST_TIMEOUT" qemu-system-x86_64 "${QEMU_ARGS[@]}" || rc=$?
elapsed=$(( $(date +%s) - start ))
echo "guest ran ${elapsed}s, qemu exit status $rc" >&2
if ! grep -q WORKLOAD-COMPLETE "$WORK/console.log"; then
  echo "guest did not complete the workload; console tail:" >&2
  tail -40 "$WORK/console.log" >&2
  exit 1
fi
qemu-img info "$IMG" > "$WORK/img-info-after.txt"
qemu-img check "$IMG" > "$WORK/img-check-after.txt" 2>&1 || true

# ---------------------------------------------------------------------------------------------
# 4. Collect outputs into Traces/
mkdir -p "$WORK/guest-out"
tar -xf "$WORK/out.raw" -C "$WORK/guest-out"

rm -f "$OUT/$NAME".qemu-trace.log* "$OUT/$NAME".blktrace.* "$OUT/$NAME".blkparse.txt* \
      "$OUT/$NAME".logwrites.tsv "$OUT/$NAME".console.log "$OUT/$NAME".image.txt \
      "$OUT/$NAME".trace.csv*

sed "s|$WORK/||g" "$WORK/qemu-trace.log" | xz -9 -T1 > "$OUT/$NAME.qemu-trace.log.xz"
for f in "$WORK"/guest-out/"$NAME".blktrace.*; do
  xz -9 -T1 -c "$f" > "$OUT/$(basename "$f").xz"
done
# blkparse's default text output (what qcow2sim's blkparse reader reads), from standard input:
# with -i NAME -D DIR blkparse would pick files by CPU number, which need not match the suffix.
btfiles=("$WORK"/guest-out/"$NAME".blktrace.*)
((${#btfiles[@]} == 1)) || { echo "expected one blktrace file (-smp 1), got ${#btfiles[@]}" >&2; exit 1; }
blkparse -i - < "${btfiles[0]}" > "$WORK/blkparse.txt"
xz -9 -T1 -c "$WORK/blkparse.txt" > "$OUT/$NAME.blkparse.txt.xz"
tr -d '\r' < "$WORK/console.log" > "$OUT/$NAME.console.log"

# blklogwrites (dm-log-writes) log: 512-byte superblock, then per entry one 512-byte sector with
# le64 sector, nr_sectors, flags, data_len, followed (writes and write-zeroes only) by
# nr_sectors of data. QEMU writes data_len=0 always; flags 1=FLUSH 4=DISCARD.
# Write-zeroes entries look like writes (flags 0); QEMU zeroes their data area in the log with
# bdrv_co_pwrite_zeroes on the log-file node, which the QEMU trace shows: use that to label them.
LOGNODE=$(awk '/:bdrv_open_common / && /filename "[^"]*writes\.log"/ { print $3 }' "$WORK/qemu-trace.log")
awk -v n="$LOGNODE" '$0 ~ ":bdrv_co_pwrite_zeroes bs " n " " { print $5 }' "$WORK/qemu-trace.log" \
  > "$WORK/log-zeroed-offsets"
perl -e '
  use strict; open(my $f, "<:raw", $ARGV[0]) or die; my $size = -s $ARGV[0];
  my %zeroed; open(my $z, "<", $ARGV[1]) or die; while (<$z>) { chomp; $zeroed{$_} = 1; }
  read($f, my $sb, 512) == 512 or die "short log";
  my ($magic, $ver, $n, $ss) = unpack("Q<Q<Q<L<", $sb);
  die sprintf("bad magic %x", $magic) unless $magic == 0x6a736677736872;
  print "# blklogwrites entries (node img-logw, directly above img-qcow2); sector size $ss\n";
  print "# index\top\tflags\tsector\tnr_sectors\toffset_bytes\tbytes\n";
  my ($pos, $i) = ($ss, 0);
  while ($pos + $ss <= $size) {
    seek($f, $pos, 0); read($f, my $e, 32) == 32 or last;
    my ($sec, $nr, $fl, $dl) = unpack("Q<Q<Q<Q<", $e);
    last if $sec == 0 && $nr == 0 && $fl == 0 && $dl == 0 && $i >= $n;
    my $op = ($fl & 1) ? "flush" : ($fl & 4) ? "discard"
           : $zeroed{$pos + $ss} ? "write-zeroes" : "write";
    printf "%d\t%s\t%d\t%d\t%d\t%d\t%d\n", $i, $op, $fl, $sec, $nr, $sec * $ss, $nr * $ss;
    $pos += $ss; $pos += $nr * $ss if $op =~ /^write/; $i++;
  }
  print STDERR "logwrites: $i entries walked, superblock says $n\n";
' "$WORK/writes.log" "$WORK/log-zeroed-offsets" > "$OUT/$NAME.logwrites.tsv"

# The qcow2 node's complete request stream (R W Z D F) in qcow2sim's native CSV: the QEMU trace
# log's reads/writes/write-zeroes and flush starts merged with the logwrites discards; see the
# converter's header and Traces/README.md for the merge.
MARK_BASE=$((MARK_BASE * 4096)) perl "$OUT/guest-trace-to-csv.pl" \
  "$OUT/$NAME.qemu-trace.log.xz" "$OUT/$NAME.logwrites.tsv" > "$OUT/$NAME.trace.csv"

{
  echo "# $NAME: image and run parameters (written by Traces/record-guest.sh)"
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "qemu: $(qemu-system-x86_64 --version | head -1)"
  echo "guest_kernel: $KVER ($(dpkg-query -W -f='${Package} ${Version}' "linux-image-$KVER" 2>/dev/null || echo unknown))"
  echo "busybox: $(/bin/busybox | head -1)"
  echo "mke2fs: $(mke2fs -V 2>&1 | head -1)"
  echo "blktrace: $(blktrace -v 2>&1 | head -1)"
  echo "workload_seed: $SEED"
  echo "virtual_size: $DISK_SIZE"
  echo "cluster_size: $CLUSTER_SIZE"
  echo "image_create_command: $IMG_CMD"
  echo "phase_marker: 4096-byte read of the out-raw disk (vdb) at offset $((MARK_BASE * 4096)) + phase*4096"
  echo "guest_run_seconds: $elapsed"
  echo "qemu_command:"
  { printf '  qemu-system-x86_64'
    for a in "${QEMU_ARGS[@]}"; do [[ $a == *' '* ]] && printf " '%s'" "$a" || printf ' %s' "$a"; done
    echo; } | sed "s|$WORK/|\$WORK/|g"
  echo "trace_events_file:"; sed 's/^/  /' "$WORK/events"
  echo "qemu-img info (before run):"; sed 's/^/  /' "$WORK/img-info-before.txt" | sed "s|$WORK/||"
  echo "qemu-img info (after run):"; sed 's/^/  /' "$WORK/img-info-after.txt" | sed "s|$WORK/||"
  echo "qemu-img check (after run):"; sed 's/^/  /' "$WORK/img-check-after.txt" | sed "s|$WORK/||"
  echo "guest blktrace summary:"; sed 's/^/  /' "$WORK/guest-out/blktrace.stdout"
  echo "workload plan (executed in order):"; sed 's/^/  /' "$WORK/guest-out/plan.txt"
} > "$OUT/$NAME.image.txt"

echo "wrote (guest run ${elapsed}s):"
for f in "$OUT/$NAME".*; do
  printf '  %-48s %10d bytes\n' "Traces/$(basename "$f")" "$(stat -c %s "$f")"
done
echo "QEMU trace events:"
awk '{ sub(/^[0-9]+@[0-9.]+:/, "", $1); n[$1]++ } END { for (e in n) printf "  %-32s %d\n", e, n[e] }' \
  "$WORK/qemu-trace.log" | sort
echo "blklogwrites entries by op:"
awk -F'\t' '!/^#/ { n[$2]++ } END { for (o in n) printf "  %-8s %d\n", o, n[o] }' "$OUT/$NAME.logwrites.tsv"
