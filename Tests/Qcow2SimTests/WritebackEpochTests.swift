import Testing

@testable import Qcow2Sim

/// A table's write-back over its own earlier one in the same host-file epoch is skipped (it would
/// change nothing); a hole punched or data zeroed in between starts a new epoch, and the next
/// write-back writes the table's blocks again. Hand-worked: one 4 KiB L2 slice at host offset
/// 0x30000 of a 1 GiB image with 64 KiB clusters, written back by a cache flush.
@Suite struct WritebackEpochTests {
    static let slice: UInt64 = 0x30000

    static func system() throws -> CacheSystem<QemuPolicy> {
        var o = CacheOptions()
        o.l2CacheSize = 8192
        let sizing = try CacheSizing(
            geometry: Geometry(clusterBits: 16, extendedL2: false, refcountOrder: 4, virtualSize: 1 << 30), options: o)
        return CacheSystem<QemuPolicy>(sizings: [sizing])
    }

    /// GET, MARK_DIRTY, PUT of the slice, then a flush of the L2 cache: one write-back.
    static func dirtyAndFlush(_ system: CacheSystem<QemuPolicy>) {
        var ops = [
            MetadataOp(.get, .l2, offset: slice, flag: 1), MetadataOp(.markDirty, .l2, offset: slice),
            MetadataOp(.put, .l2, offset: slice), MetadataOp(.writeCache, .l2),
        ]
        ops.withUnsafeMutableBufferPointer { system.consume($0) }
    }

    /// Whether the host file's block status reads the slice's first block as data.
    static func holdsData(_ host: HostFile) -> Bool { !host.status(slice, 4096).zero }

    @Test(arguments: ["punch", "zero range"])
    func aRemovalBetweenWritebacksWritesTheTableAgain(removal: String) throws {
        let system = try Self.system()
        let host = HostFile(length: 0x100000)
        system.hosts = [host]
        Self.dirtyAndFlush(system)
        #expect(Self.holdsData(host))
        let epoch = host.epoch
        // A second write-back in the same epoch: skipped, and nothing to change.
        Self.dirtyAndFlush(system)
        #expect(host.epoch == epoch)
        #expect(Self.holdsData(host))
        if removal == "punch" {
            host.punch(Self.slice, 4096)
        } else {
            host.zeroRange(Self.slice, 65536)
        }
        #expect(host.epoch == epoch + 1)
        #expect(!Self.holdsData(host))
        Self.dirtyAndFlush(system)
        #expect(Self.holdsData(host), "the write-back after the \(removal) wrote the slice again")
        #expect(system.caches(image: 0).l2.stats.writebacks == 3)
    }

    /// New host files: every slot's epoch is forgotten, so the first write-back to the new file
    /// writes.
    @Test func newHostFilesForgetTheEpochs() throws {
        let system = try Self.system()
        system.hosts = [HostFile(length: 0x100000)]
        Self.dirtyAndFlush(system)
        let fresh = HostFile(length: 0x100000)
        system.hosts = [fresh]
        #expect(!Self.holdsData(fresh))
        Self.dirtyAndFlush(system)
        #expect(Self.holdsData(fresh))
    }
}
