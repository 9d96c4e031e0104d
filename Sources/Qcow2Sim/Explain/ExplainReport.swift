/// One request walked through step by step (`qcow2sim explain`): the address translation from
/// guest offset to host cluster, every cache operation in QEMU's order with hit or miss, the
/// victim and why, write-backs and dependency flushes, the copy-on-write ranges and the
/// metadata the request changed. Encoded as the `--format json` document (snake_case keys).
public struct ExplainReport: Codable, Sendable, Equatable {
    /// The document's `schema_version`.
    public static let currentSchemaVersion = 1

    /// `schema_version`: 1.
    public var schemaVersion = ExplainReport.currentSchemaVersion
    /// `"explain"`.
    public var command = "explain"
    /// The trace as given.
    public var trace: String
    /// The request explained.
    public var request: Request
    /// Every image of the chain, top first.
    public var images: [Image]
    /// The address walk of each guest cluster the request touches (at most `walkLimit`), in the
    /// state before the request, with the top image's entries after it.
    public var walk: [ClusterWalk]
    /// Clusters the request touches beyond the ones `walk` shows.
    public var walkOmitted: Int
    /// The cache operations, in the order QEMU runs them.
    public var operations: [Operation]
    /// Copy-on-write regions of a write (empty for other requests).
    public var cow: [CowRegion]
    /// What became of the COW regions (the zero-COW probe, copies).
    public var cowOutcome: [String]
    /// Refcounts the request changed.
    public var refcountChanges: [RefcountChange]
    /// L1 and refcount-table entries the request changed.
    public var tableChanges: [TableChange]
    /// The request's events, in QEMU's `qcow2_cache_*` format with `image N`.
    public var events: [String]
    /// The same events in the spec's compact notation (qcow2-model.md §16: `L2 get 0x40000 miss
    /// 0`, `flush RC`, `wb L2 3`, `(xN)` for repeats; `[image N]` in a chain).
    public var listing: [String]
    /// What the reader should know about how far this explanation goes.
    public var notes: [String]

    /// How many guest clusters the walk shows.
    public static let walkLimit = 16

    /// The request.
    public struct Request: Codable, Sendable, Equatable {
        /// Counted from 1, as `validate` and `--request-markers` count requests.
        public var number: Int
        /// `read`, `write`, `discard`, `write_zeroes`, `write_zeroes_unmap` or `flush`.
        public var op: String
        /// Guest offset in bytes.
        public var offset: UInt64
        /// Length in bytes.
        public var length: UInt64
        /// Where it is in the trace (`line 12`, `record 3`).
        public var location: String
        /// Trace time in seconds (nil: no timestamps).
        public var time: Double?
    }

    /// One image of the chain and its caches.
    public struct Image: Codable, Sendable, Equatable {
        /// Chain position (0 = base).
        public var index: Int
        /// `top`, `backing` or `base`.
        public var role: String
        /// Virtual size in bytes.
        public var virtualSize: UInt64
        /// Cluster size in bytes.
        public var clusterSize: UInt64
        /// Extended L2 entries (32 subclusters per cluster).
        public var extendedL2: Bool
        /// Refcount width in bits.
        public var refcountBits: Int
        /// L2 cache slots and bytes per slot (a slice or a whole table).
        public var l2CacheEntries: Int
        /// Bytes per L2 cache slot.
        public var l2CacheEntrySize: UInt64
        /// Refcount cache slots.
        public var refcountCacheEntries: Int
        /// Bytes per refcount cache slot (one refcount block).
        public var refcountCacheEntrySize: UInt64
        /// The eviction policy.
        public var policy: String
    }

    /// One L1 / L2 entry decoded (qcow2-model.md §1.3–§1.4).
    public struct Entry: Codable, Sendable, Equatable {
        /// The 64-bit word, in hex.
        public var word: String
        /// Bit 63.
        public var copied: Bool
        /// Bit 62 (L2 only).
        public var compressed: Bool
        /// Bit 0, the zero flag (standard L2 entries only).
        public var zeroFlag: Bool
        /// The offset field (bits 9–55): the host cluster (L2) or the L2 table (L1); 0 = none.
        public var offset: UInt64
        /// The cluster type (`unallocated`, `zero_plain`, `zero_alloc`, `normal`, `compressed`).
        public var type: String
        /// Extended L2: the subcluster bitmap in hex, and its allocation and zero bits as 32
        /// characters each, subcluster 0 first.
        public var bitmap: String?
        /// Extended L2: allocation bits, subcluster 0 first (`1` = allocated).
        public var allocBits: String?
        /// Extended L2: zero bits, subcluster 0 first (`1` = reads as zeroes).
        public var zeroBits: String?
    }

    /// The walk of one guest cluster.
    public struct ClusterWalk: Codable, Sendable, Equatable {
        /// The part of the request inside this cluster: guest offsets `[from, to)`.
        public var from: UInt64
        /// End (exclusive).
        public var to: UInt64
        /// One step per image visited, top first, down the chain until the data are found.
        public var layers: [Layer]
    }

    /// One image's part of a cluster's walk.
    public struct Layer: Codable, Sendable, Equatable {
        /// Chain position.
        public var image: Int
        /// Guest cluster number (`g >> cluster_bits`) in this image's geometry.
        public var guestCluster: UInt64
        /// Offset inside the cluster.
        public var offsetInCluster: UInt64
        /// `l1_index(g)`.
        public var l1Index: Int
        /// Guest bytes one L1 entry covers: `[l1Index × span, (l1Index + 1) × span)`.
        public var l1Span: UInt64
        /// The L1 entry before the request.
        public var l1Entry: Entry
        /// The L1 entry after it (top image, when changed).
        public var l1EntryAfter: Entry?
        /// `l2_index(g)`.
        public var l2Index: Int
        /// Which slice of the table holds the entry (`l2_index / slice_entries`).
        public var slice: Int
        /// Entries per slice.
        public var sliceEntries: Int
        /// The entry's index inside its slice.
        public var indexInSlice: Int
        /// The slice's host offset (the L2 cache's key), nil without a table.
        public var sliceOffset: UInt64?
        /// The L2 entry before the request (nil without a table).
        public var l2Entry: Entry?
        /// The L2 entry after it (top image, when changed).
        public var l2EntryAfter: Entry?
        /// Subclusters the request touches (`first`–`last`), with extended L2.
        public var subclusters: String?
        /// Their types before the request, one per touched subcluster, with extended L2.
        public var subclusterTypes: [String]?
        /// Where the guest bytes are: a host offset, zeroes, or the next image down.
        public var resolution: String
    }

    /// One cache operation (a GET with its PUT when that follows at once).
    public struct Operation: Codable, Sendable, Equatable {
        /// 1-based position in the request's operations.
        public var step: Int
        /// Chain position of the image whose cache it addresses.
        public var image: Int
        /// `l2` or `refcount` (nil for operations without a cache).
        public var cache: String?
        /// `get`, `get_empty`, `put`, `mark_dirty`, `write`, `set_dependency`,
        /// `depends_on_flush`, `free_cluster`, `reget`, `put_held`, `task`.
        public var op: String
        /// Table or slice offset (the cache key without the image tag).
        public var offset: UInt64?
        /// What the table is (`L2 table 0x7ff000 slice 0: guest [a, b)`, `refcount block 0: host clusters 0–2047`).
        public var table: String?
        /// `hit` or `miss` (GET).
        public var result: String?
        /// Why the table was not resident, for a miss: `cold`, `evicted`, `cleaned`, `discarded`.
        public var missClass: String?
        /// The slot used.
        public var slot: Int?
        /// Lookups this line stands for (repeated hits of one table are one line).
        public var count: Int
        /// The slot's LRU stamp before the operation.
        public var stampBefore: UInt64?
        /// The slot's stamp after the release (nil: still held).
        public var stampAfter: UInt64?
        /// The cache's LRU clock after the operation.
        public var lruClock: UInt64?
        /// The table was marked dirty while held.
        public var markedDirty: Bool
        /// For a miss: how the victim was chosen.
        public var victim: Victim?
        /// Slots written back during the operation (this cache and, after a dependency, the other).
        public var writebacks: [String]
        /// What the operation means here (with the spec section).
        public var note: String
        /// The events it printed, in the spec's compact notation (`L2 get 0x40000 miss 0`).
        public var events: [String]
    }

    /// How a miss chose its slot (qcow2-model.md §3.2, QEMU `qcow2_cache_do_get`).
    public struct Victim: Codable, Sendable, Equatable {
        /// `(offset / table_size × 4) mod n`.
        public var startIndex: Int
        /// How it was computed, e.g. `(0x7ff000 / 4096 × 4) mod 512 = 508`.
        public var startFormula: String
        /// The slot chosen.
        public var slot: Int
        /// The table the slot held before (nil: it was empty).
        public var evictedOffset: UInt64?
        /// Its stamp.
        public var evictedStamp: UInt64?
        /// It was dirty (written back before the read).
        public var evictedDirty: Bool
        /// Empty slots at the time.
        public var emptySlots: Int
        /// Pinned slots skipped.
        public var pinnedSlots: Int
        /// The reason, in words.
        public var reason: String
    }

    /// A copy-on-write region of one allocation (qcow2-model.md §7.5).
    public struct CowRegion: Codable, Sendable, Equatable {
        /// Guest offset of the cluster.
        public var guestCluster: UInt64
        /// `head` (cow_start) or `tail` (cow_end).
        public var part: String
        /// Guest offsets `[from, to)` to copy.
        public var from: UInt64
        /// End (exclusive).
        public var to: UInt64
        /// Why this range (the entry's subcluster type there).
        public var reason: String
    }

    /// One refcount the request changed.
    public struct RefcountChange: Codable, Sendable, Equatable {
        /// Chain position.
        public var image: Int
        /// Host cluster number.
        public var cluster: UInt64
        /// Its host offset.
        public var hostOffset: UInt64
        /// Refcount before.
        public var before: UInt64
        /// Refcount after.
        public var after: UInt64
        /// What the cluster now is (`L2 table for L1 index 227`, `data of guest cluster …`, `refcount block 1`).
        public var what: String
    }

    /// One L1 or refcount-table entry the request changed.
    public struct TableChange: Codable, Sendable, Equatable {
        /// Chain position.
        public var image: Int
        /// `l1` or `refcount_table`.
        public var table: String
        /// Entry index.
        public var index: Int
        /// Before, in hex.
        public var before: String
        /// After, in hex.
        public var after: String
    }
}
