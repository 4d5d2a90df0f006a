import Multiformats
import NIOCore
import Testing

@testable import Resolution

/// The own-name life cycle of the DHT (`OwnNames`, spec/dht.md §7.1) without sockets or clocks:
/// each race the register/unregister fixes were about (ebdac28, 157cf8c), the restore back-off on
/// a virtual clock, and the republish rules.
@Suite("own names: register, unregister and restore races; back-off; republish rules")
struct OwnNamesTests {
    static let name = Fixtures.name
    static let rules = OwnNames.Rules(replicationFactor: 20, republishFraction: 0.5)
    static let entry = OwnNames.Entry(addresses: nil, protocols: nil, ttl: 3600)

    @Test("a register with no other call on the name keeps it")
    func registerKeeps() throws {
        var names = OwnNames(rules: Self.rules)
        let started = names.beginRegister(Self.name)
        let ticket = try #require(started)
        do {
            let outcome = names.finishRegister(ticket, entry: Self.entry)
            #expect(outcome)
        }
        #expect(names.registered == [Self.name])
        #expect(!names.mustUndoSave(ticket))
    }

    @Test("a republish signs the entry kept now, and nothing while a register or unregister of the name is in progress")
    func republishSeesTheNewestEntry() throws {
        var names = OwnNames(rules: Self.rules)
        #expect(names.republishable(Self.name) == nil, "a name never registered")
        let first = names.beginRegister(Self.name)
        #expect(names.republishable(Self.name) == nil, "a register still publishing")
        var kept = names.finishRegister(try #require(first), entry: Self.entry)
        #expect(kept)
        #expect(names.republishable(Self.name) == Self.entry)

        // A register with explicit addresses starts: an upkeep round that found the old entry
        // must not sign it now (seen in the 100-node test: the round's republish replaced the
        // addresses a register had just published).
        let moved = OwnNames.Entry(addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/65000")], protocols: nil, ttl: 3600)
        let second = names.beginRegister(Self.name)
        #expect(names.republishable(Self.name) == nil)
        kept = names.finishRegister(try #require(second), entry: moved)
        #expect(kept)
        #expect(names.republishable(Self.name) == moved)

        // An unregister: nothing to republish, and a later register brings it back.
        let unregistered = names.unregister(Self.name)
        #expect(unregistered)
        #expect(names.republishable(Self.name) == nil)
        let third = names.beginRegister(Self.name)
        kept = names.finishRegister(try #require(third), entry: Self.entry)
        #expect(kept)
        #expect(names.republishable(Self.name) == Self.entry)
    }

    @Test("an unregister while the register is still publishing wins: nothing is kept (ebdac28)")
    func unregisterDuringPublish() throws {
        var names = OwnNames(rules: Self.rules)
        let started = names.beginRegister(Self.name)
        let ticket = try #require(started)
        do {
            let outcome = names.unregister(Self.name)
            #expect(!outcome)
        }
        do {
            let outcome = names.finishRegister(ticket, entry: Self.entry)
            #expect(!outcome)
        }
        #expect(names.registered.isEmpty)
    }

    @Test("an unregister between keeping the name and saving it makes the register undo the save (ebdac28)")
    func unregisterBeforeSave() throws {
        var names = OwnNames(rules: Self.rules)
        let started = names.beginRegister(Self.name)
        let ticket = try #require(started)
        do {
            let outcome = names.finishRegister(ticket, entry: Self.entry)
            #expect(outcome)
        }
        do {
            let outcome = names.unregister(Self.name)
            #expect(outcome)
        }
        #expect(names.mustUndoSave(ticket))
        #expect(names.registered.isEmpty)
    }

    @Test("of two registers, the later started wins, whichever finishes first (157cf8c)")
    func lastRegisterWins() throws {
        var names = OwnNames(rules: Self.rules)
        let firstTicket = names.beginRegister(Self.name)
        let first = try #require(firstTicket)
        let secondTicket = names.beginRegister(Self.name)
        let second = try #require(secondTicket)
        var newer = Self.entry
        newer.ttl = 600
        do {
            let outcome = names.finishRegister(second, entry: newer)
            #expect(outcome)
        }
        do {
            let outcome = names.finishRegister(first, entry: Self.entry)
            #expect(!outcome)
        }
        #expect(names.names[Self.name] == newer)
    }

    @Test("a restore started before an unregister does not bring the name back (157cf8c)")
    func restoreAfterUnregister() {
        var names = OwnNames(rules: Self.rules)
        // The restore reads the epochs, then the saved registrations…
        let epochs = names.epochs
        // …and the name is unregistered before its turn.
        _ = names.unregister(Self.name)
        do {
            let outcome = names.beginRegister(Self.name, ifEpoch: epochs[Self.name, default: 0])
            #expect(outcome == nil)
        }
        #expect(names.registered.isEmpty)
    }

    @Test("a restore does not overwrite a newer register, finished or still publishing (157cf8c)")
    func restoreAfterRegister() throws {
        var names = OwnNames(rules: Self.rules)
        let epochs = names.epochs
        let runningStarted = names.beginRegister(Self.name)
        let running = try #require(runningStarted)
        do {
            let outcome = names.beginRegister(Self.name, ifEpoch: epochs[Self.name, default: 0])
            #expect(outcome == nil)
        }
        do {
            let outcome = names.finishRegister(running, entry: Self.entry)
            #expect(outcome)
        }
        // A restore that read the epochs after that register still skips a name published already.
        do {
            let outcome = names.beginRegister(Self.name, ifEpoch: names.epochs[Self.name, default: 0])
            #expect(outcome == nil)
        }
        #expect(names.registered == [Self.name])
    }

    @Test("a failed restore is tried again after 1, 2, 4 … at most 64 minutes, and at once after a success")
    func restoreBackoff() {
        var names = OwnNames(rules: Self.rules)
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        #expect(names.restoreDue(Self.name, now: now))
        for (attempt, minutes) in [1, 2, 4, 8, 16, 32, 64, 64].enumerated() {
            do {
                let outcome = names.restoreFailed(Self.name, now: now)
                #expect(outcome == attempt + 1)
            }
            #expect(!names.restoreDue(Self.name, now: now + .minutes(Int64(minutes)) - .nanoseconds(1)))
            now = now + .minutes(Int64(minutes))
            #expect(names.restoreDue(Self.name, now: now))
        }
        _ = names.restoreFailed(Self.name, now: now)
        names.restoreSucceeded(Self.name)
        #expect(names.restoreDue(Self.name, now: now))
        do {
            let outcome = names.restoreFailed(Self.name, now: now)
            #expect(outcome == 1)
        }
    }

    @Test("republish: due at half the TTL, on an address change, after growth with few replicas, or without a record")
    func republishRules() throws {
        let names = OwnNames(rules: Self.rules)
        let record = Fixtures.record(ttl: 3600)
        let host = record.record.addresses
        var entry = Self.entry
        entry.replicas = 20
        entry.tableSizeAtPublish = 30
        func due(
            _ entry: OwnNames.Entry, _ current: SignedAgentRecord?, addresses: [Multiaddr] = host, table: Int = 30,
            at offset: UInt64 = 0, force: Bool = false
        ) -> Bool {
            names.isDue(
                entry, current: current, hostAddresses: addresses, tableSize: table, unixNow: Fixtures.now + offset,
                force: force)
        }
        #expect(!due(entry, record))
        #expect(!due(entry, record, at: 1799))
        #expect(due(entry, record, at: 1800))
        #expect(due(entry, record, force: true))
        #expect(due(entry, nil))
        #expect(due(entry, record, addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/9")]))
        // Fixed addresses do not follow the host's.
        var fixed = entry
        fixed.addresses = host
        #expect(!due(fixed, record, addresses: [try Multiaddr("/ip4/127.0.0.1/tcp/9")]))
        var few = entry
        few.replicas = 3
        #expect(!due(few, record))
        #expect(due(few, record, table: 31))
        // No replica took it: due at every round while the table has peers, not alone.
        var none = entry
        none.replicas = 0
        #expect(due(none, record))
        #expect(!due(none, record, table: 0))
    }

    @Test("a growing small table schedules one republish at a time, only while a name lacks replicas")
    func republishAfterGrowth() throws {
        var names = OwnNames(rules: Self.rules)
        do {
            let outcome = names.republishAfterGrowth(tableSize: 1)
            #expect(!outcome)
        }
        let started = names.beginRegister(Self.name)
        let ticket = try #require(started)
        do {
            let outcome = names.finishRegister(ticket, entry: Self.entry)
            #expect(outcome)
        }
        do {
            let outcome = names.republishAfterGrowth(tableSize: 1)
            #expect(outcome)
        }
        do {
            let outcome = names.republishAfterGrowth(tableSize: 2)
            #expect(!outcome)
        }
        names.growthRepublishStarted()
        do {
            let outcome = names.republishAfterGrowth(tableSize: 21)
            #expect(!outcome)
        }
        do {
            let outcome = names.republishAfterGrowth(tableSize: 20)
            #expect(outcome)
        }
        names.growthRepublishStarted()
        names.published(Self.name, replicas: 20, tableSize: 20)
        do {
            let outcome = names.republishAfterGrowth(tableSize: 20)
            #expect(!outcome)
        }
    }
}
