import Foundation
import GRDB
import Resolution

/// The node's own signed cards, by (agent, capability), in SQLite (GRDB). Its own database file
/// (`cards.db` in the data directory) with its own migrations (`cards-` prefix).
public final class CardStore: Sendable {
    /// At most this many cards per local agent (spec/cards.md §8).
    public static let maximumCardsPerAgent = 64

    public let path: String?
    private let queue: DatabaseQueue

    /// Opens the store at `path` (created with mode 0600), or an in-memory store for nil.
    /// - Throws: `.storage` with the path and the reason.
    public init(path: String?) throws(CardError) {
        self.path = path
        queue = try StoreDatabase(
            path: path, name: "card store", label: "CardStore", durable: false, migrator: Self.migrator,
            error: { CardError(.storage, $0) }
        ).queue
    }

    /// Keeps `card`, replacing the agent's card for the same capability.
    /// - Throws: `.tooManyCards` when the agent has 64 other cards; `.storage`.
    public func put(_ card: SignedCapabilityCard) throws(CardError) {
        do {
            try queue.write { db in
                let exists = try Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM cards WHERE agent = ? AND capability = ?",
                    arguments: [card.agent.value, card.card.name]) ?? 0
                let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM cards WHERE agent = ?", arguments: [card.agent.value]) ?? 0
                if exists == 0, count >= Self.maximumCardsPerAgent {
                    throw CardError(.tooManyCards, "\(card.agent) has \(count) cards, the most a node keeps per agent")
                }
                try db.execute(
                    sql: "INSERT OR REPLACE INTO cards (agent, capability, signed) VALUES (?, ?, ?)",
                    arguments: [card.agent.value, card.card.name, Data(card.bytes)])
            }
        } catch let error as CardError {
            throw error
        } catch {
            throw CardError(.storage, "cannot store \(card.agent)'s card for \(card.card.name): \(error)")
        }
    }

    /// Removes the agent's card for `capability`; returns whether there was one.
    public func remove(agent: AgentName, capability: String) throws(CardError) -> Bool {
        do {
            return try queue.write { db in
                try db.execute(
                    sql: "DELETE FROM cards WHERE agent = ? AND capability = ?", arguments: [agent.value, capability])
                return db.changesCount > 0
            }
        } catch {
            throw CardError(.storage, "cannot remove \(agent)'s card for \(capability): \(error)")
        }
    }

    /// The stored cards (of `agent`, or all), by agent then capability.
    /// - Throws: `.storage`, also for a stored card that no longer decodes (the file was changed
    ///   behind the node's back).
    public func cards(of agent: AgentName? = nil) throws(CardError) -> [SignedCapabilityCard] {
        let rows: [Data]
        do {
            rows = try queue.read { db in
                if let agent {
                    return try Data.fetchAll(
                        db, sql: "SELECT signed FROM cards WHERE agent = ? ORDER BY capability", arguments: [agent.value])
                }
                return try Data.fetchAll(db, sql: "SELECT signed FROM cards ORDER BY agent, capability")
            }
        } catch {
            throw CardError(.storage, "cannot read the card store: \(error)")
        }
        var cards: [SignedCapabilityCard] = []
        for data in rows {
            do {
                cards.append(try SignedCapabilityCard(bytes: [UInt8](data)))
            } catch {
                throw CardError(.storage, "a stored card does not decode: \(error.message)")
            }
        }
        return cards
    }

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("cards-v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE cards (
                        agent TEXT NOT NULL,
                        capability TEXT NOT NULL,
                        signed BLOB NOT NULL,
                        PRIMARY KEY (agent, capability)
                    );
                    """)
        }
        return migrator
    }()
}
