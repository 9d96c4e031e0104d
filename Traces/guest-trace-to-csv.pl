#!/usr/bin/perl
# Converts one guest recording of Traces/record-guest.sh into qcow2sim's native trace format
# (time,op,offset,length; ops R W Z D F): every request the qcow2 node received, in the order
# the qcow2 node saw them. Format conversion only; no simulation logic.
#
# Usage: Traces/guest-trace-to-csv.pl QEMU_TRACE_LOG[.xz] LOGWRITES_TSV > NAME.trace.csv
#        (env MARK_BASE: byte offset of the phase-marker reads on vdb, default 62914560)
#
# Inputs (see Traces/README.md):
#   QEMU_TRACE_LOG  QEMU's trace log (log backend, -msg timestamp=on) of the run. One thread
#                   writes it, so its line order is the order in which things happened.
#   LOGWRITES_TSV   the blklogwrites filter node's entries (write, write-zeroes, discard, flush),
#                   as record-guest.sh writes them.
#
# Merge (every record is placed at one exact line of the QEMU trace log):
#   R  `bdrv_co_preadv_part` lines whose bs is the qcow2 node (flags 0x8 guest reads; one 0x0
#      probe read of sector 0 when QEMU opens the disk).
#   W  `bdrv_co_pwritev_part` on the qcow2 node without BDRV_REQ_ZERO_WRITE (0x2).
#   Z  `bdrv_co_pwritev_part` on the qcow2 node with flag 0x2 (its preceding
#      `bdrv_co_pwrite_zeroes` line is the same request and is not counted).
#   D  discards have no trace event. blklogwrites runs the request on the qcow2 node to
#      completion and only then writes the log entry to its log file, and that write *is* traced
#      (`bdrv_co_pwritev_part` on the writes.log node at the entry's log offset). Each discard
#      entry of LOGWRITES_TSV is placed at the trace line of its own log-entry write, i.e. where
#      the discard completed at the qcow2 node (offset and length from the TSV).
#      W and Z entries of the TSV are matched the same way against the qcow2-node writes
#      (same op, offset, length; each one started before its log entry was written): a check
#      that the two recordings are one request stream. Any mismatch aborts.
#   F  flushes have no request trace event either, but every flush that reaches the qcow2 node
#      runs qcow2_co_flush_to_os -> qcow2_write_caches, which traces
#      `qcow2_cache_flush co C is_l2_cache 1` first and `... is_l2_cache 0` after it. Each such
#      start is one F, placed at that line. Not flush starts: the is_l2_cache 1 flush that
#      l2_allocate does (line right after `qcow2_l2_allocate_write_l2`) and a dependency flush
#      from a refcount-block write (previous event of the same coroutine is a refcount
#      `qcow2_cache_entry_flush`). This yields *all* flushes the qcow2 node got, more than the
#      flush entries of the TSV: the blklogwrites node logs (and flushes its child in
#      blk_log_writes_co_flush_to_disk) only when it had a write since its last flush, and
#      bdrv_co_flush then flushes all its children again (flush_children). So a logged guest
#      flush reaches qcow2 twice (before and after its log entry, same coroutine) and a skipped
#      one once. The script checks this: each TSV flush entry lies between two flush starts of
#      one coroutine.
#   Cut: the last phase-marker read of vdb (MARK_BASE + phase*4096, 4096 bytes) is the guest's
#      last action on the disks. Only QEMU's own shutdown flushes (VM stop, close, inactivate)
#      follow it; they are left out (qemu-io closes the image the same way at the end of a
#      validate run). Any other qcow2-node request after it aborts.
# Times: seconds relative to the first record, from the log's microsecond timestamps.
use strict;
use warnings;

die "usage: $0 QEMU_TRACE_LOG[.xz] LOGWRITES_TSV\n" unless @ARGV == 2;
my ($tracePath, $tsvPath) = @ARGV;
my $markBase = $ENV{MARK_BASE} // 62914560;

sub open_trace {
    my ($p) = @_;
    my $fh;
    if ($p =~ /\.xz$/) { open($fh, '-|', 'xz', '-dc', '--', $p) or die "xz -dc $p: $!\n"; }
    else { open($fh, '<', $p) or die "$p: $!\n"; }
    return $fh;
}

# --- logwrites entries, keyed by the log-file offset of their entry sector -------------------
my $ss = 512;
my (%entryAt, @entries);
{
    open(my $t, '<', $tsvPath) or die "$tsvPath: $!\n";
    my $pos;
    while (<$t>) {
        chomp;
        if (/^#/) { $ss = $1 if /sector size (\d+)/; next; }
        next if $_ eq '';
        my ($i, $op, $fl, $sec, $nr, $off, $bytes) = split /\t/;
        $pos //= $ss;
        die "$tsvPath:$.: index $i out of sequence\n" unless $i == @entries;
        my $e = { index => $i, op => $op, offset => $off, bytes => $bytes, pos => $pos, line => $. };
        push @entries, $e;
        $entryAt{$pos} = $e;
        $pos += $ss;
        $pos += $bytes if $op eq 'write' || $op eq 'write-zeroes';
    }
}

# --- node names from bdrv_open_common, and the marker cut ------------------------------------
my ($qcow2, $logFile, $vdbFile, $cutLine);
{
    my $fh = open_trace($tracePath);
    while (<$fh>) {
        if (/:bdrv_open_common bs (\S+) filename "([^"]*)" flags \S+ format_name "([^"]*)"/) {
            my ($bs, $file, $fmt) = ($1, $2, $3);
            $qcow2 = $bs if $fmt eq 'qcow2';
            $logFile = $bs if $fmt eq 'file' && $file =~ /writes\.log$/;
            $vdbFile = $bs if $fmt eq 'file' && $file =~ /out\.raw$/;
        } elsif (defined $vdbFile && /:bdrv_co_preadv_part bs \Q$vdbFile\E offset (\d+) bytes 4096 /
                 && $1 >= $markBase && $1 < $markBase + 64 * 4096 && ($1 - $markBase) % 4096 == 0) {
            $cutLine = $.;
        }
    }
    close($fh);
}
die "no qcow2 node in $tracePath\n" unless defined $qcow2;
die "no writes.log node in $tracePath\n" unless defined $logFile;
die "no phase-marker read in $tracePath\n" unless defined $cutLine;

# --- the merge -------------------------------------------------------------------------------
my (@out, %pendingWrites, %lastEvent, @flushStarts, %n, %bytes);
my ($t0, $prevName, $lastTime) = (undef, '', 0);
my %flushSeen;   # entry index -> coroutine of the flush start just before its log entry
my $lastFlushStart;
my $fh = open_trace($tracePath);
my $ignoredAfterCut = 0;
sub emit {
    my ($time, $op, $off, $len) = @_;
    $t0 //= $time;
    die "time goes backwards at record " . (@out + 1) . "\n" if $time < $lastTime;
    $lastTime = $time;
    push @out, [$time, $op, $off, $len];
    $n{$op}++; $bytes{$op} += $len;
}
while (my $line = <$fh>) {
    chomp $line;
    my ($prefix, $rest) = split /:/, $line, 2;
    next unless defined $rest;
    my ($time) = $prefix =~ /@(\d+\.\d+)$/ or next;
    my ($name, $args) = split / /, $rest, 2;
    $args //= '';
    my $afterCut = $. > $cutLine;
    if ($name eq 'bdrv_co_preadv_part' || $name eq 'bdrv_co_pwritev_part') {
        my ($bs, $off, $len, $flags) = $args =~ /^bs (\S+) offset (\d+) bytes (\d+) flags 0x([0-9a-f]+)/
            or die "line $.: cannot parse $name\n";
        if ($bs eq $qcow2) {
            die "line $.: qcow2-node request after the last phase marker\n" if $afterCut;
            if ($name eq 'bdrv_co_preadv_part') {
                emit($time, 'R', $off, $len);
            } else {
                my $op = hex($flags) & 0x2 ? 'Z' : 'W';
                emit($time, $op, $off, $len);
                push @{$pendingWrites{"$op $off $len"}}, $.;
            }
        } elsif ($bs eq $logFile && $name eq 'bdrv_co_pwritev_part' && exists $entryAt{$off}
                 && !(hex($flags) & 0x2)) {
            my $e = delete $entryAt{$off};
            my $want = $e->{op} eq 'write' ? $ss + $e->{bytes} : $ss;
            die "line $.: log entry $e->{index} written with $len bytes, expected $want\n" unless $len == $want;
            if ($e->{op} eq 'discard') {
                emit($time, 'D', $e->{offset}, $e->{bytes});
            } elsif ($e->{op} eq 'flush') {
                die "line $.: flush entry $e->{index} without a flush start before it\n" unless defined $lastFlushStart;
                $flushSeen{$e->{index}} = $lastFlushStart;
            } else {
                my $op = $e->{op} eq 'write' ? 'W' : 'Z';
                my $q = $pendingWrites{"$op $e->{offset} $e->{bytes}"};
                die "line $.: log entry $e->{index} ($e->{op} $e->{offset}+$e->{bytes}) matches no qcow2-node request in flight\n"
                    unless $q && @$q;
                shift @$q;
            }
        }
    } elsif ($name eq 'qcow2_cache_flush' || $name eq 'qcow2_cache_entry_flush') {
        my ($co, $l2) = $args =~ /^co (\S+) is_l2_cache (\d)/ or die "line $.: cannot parse $name\n";
        if ($name eq 'qcow2_cache_flush' && $l2 == 1 && $prevName ne 'qcow2_l2_allocate_write_l2') {
            my $prev = $lastEvent{$co} // '';
            unless ($prev eq 'qcow2_cache_entry_flush 0') {
                if ($afterCut) { $ignoredAfterCut++; }
                else {
                    emit($time, 'F', 0, 0);
                    # a flush entry written since the previous start pairs this start with it
                    for my $i (keys %flushSeen) {
                        my $v = $flushSeen{$i};
                        next if ref $v;
                        die "line $.: flush entry $i: next flush start is coroutine $co, not $v\n" unless $v eq $co;
                        $flushSeen{$i} = [$v];
                    }
                    $lastFlushStart = $co;
                }
            }
        }
        $lastEvent{$co} = "$name $l2";
    } elsif ($args =~ /^co (\S+)/) {
        $lastEvent{$1} = $name;
    }
    $prevName = $name;
}
close($fh) or die "reading $tracePath failed\n";

for my $k (keys %pendingWrites) {
    die "qcow2-node request '$k' (trace line $pendingWrites{$k}[0]) has no logwrites entry\n" if @{$pendingWrites{$k}};
}
die scalar(keys %entryAt) . " logwrites entries never written in the trace (first: index "
    . (sort { $a->{index} <=> $b->{index} } values %entryAt)[0]{index} . ")\n" if %entryAt;
my $loggedFlushes = 0;
for my $i (keys %flushSeen) {
    die "flush entry $i has no second flush start after it\n" unless ref $flushSeen{$i};
    $loggedFlushes++;
}

print "# qcow2sim native trace: the qcow2 node's requests in a Traces/record-guest.sh recording.\n";
print "# made by Traces/guest-trace-to-csv.pl from " . ($tracePath =~ s|.*/||r) . " and " . ($tsvPath =~ s|.*/||r) . "\n";
print "# time = seconds since the first request (QEMU trace log timestamps, microseconds)\n";
print "time,op,offset,length\n";
for my $r (@out) {
    printf "%.6f,%s,%d,%d\n", $r->[0] - $t0, $r->[1], $r->[2], $r->[3];
}
printf STDERR "records %d:", scalar @out;
printf STDERR " %s %d (%d bytes)", $_, $n{$_} // 0, $bytes{$_} // 0 for qw(R W Z D F);
print STDERR "\n";
printf STDERR "flushes at the qcow2 node: %d = 2 x %d logged by blklogwrites + %d not logged; "
    . "%d QEMU shutdown flushes after the last phase marker left out\n",
    $n{F} // 0, $loggedFlushes, ($n{F} // 0) - 2 * $loggedFlushes, $ignoredAfterCut;
printf STDERR "logwrites entries matched: %d of %d\n", scalar @entries, scalar @entries;
