import Identity
import NIOCore
import Resolution

/// Outcomes of a batch of resolves.
struct ResolveSummary: Sendable {
    var attempts = 0
    var resolvedToHolder = 0
    /// Resolves that returned a rival claim.
    var rivalChosen = 0
    var notFound = 0
    var stoppedEarly = 0
    var hops = Distribution()
    var requests = Distribution()
    var milliseconds = Distribution()

    mutating func add(_ outcome: ResolveOutcome) {
        attempts += 1
        if outcome.resolvedToHolder { resolvedToHolder += 1 }
        if outcome.found && !outcome.resolvedToHolder { rivalChosen += 1 }
        if !outcome.found { notFound += 1 }
        if outcome.stoppedEarly { stoppedEarly += 1 }
        hops.add(outcome.hops)
        requests.add(outcome.requests)
        milliseconds.add(outcome.milliseconds)
    }

    var successRate: Double { attempts == 0 ? .nan : Double(resolvedToHolder) / Double(attempts) }

    /// Adds another batch's outcomes.
    mutating func merge(_ other: ResolveSummary) {
        attempts += other.attempts
        resolvedToHolder += other.resolvedToHolder
        rivalChosen += other.rivalChosen
        notFound += other.notFound
        stoppedEarly += other.stoppedEarly
        hops.merge(other.hops)
        requests.merge(other.requests)
        milliseconds.merge(other.milliseconds)
    }

    /// The contract's figures for these resolves (a success returned the true holder's latest
    /// record; messages are the requests a resolve sent), with the other outcomes' shares.
    func record(nodes: Int) -> ResultRecord {
        var record = ResultRecord(
            nodes: nodes, successes: resolvedToHolder, attempts: attempts, hops: hops, messages: requests)
        let share = { (part: Int) -> ResultRecord.Value in .number(attempts == 0 ? .nan : Double(part) / Double(attempts)) }
        record["rival_chosen_rate"] = share(rivalChosen)
        record["not_found_rate"] = share(notFound)
        record["stopped_early_rate"] = share(stoppedEarly)
        record["hops_p99"] = .number(hops.percentile(0.99))
        record["milliseconds_mean"] = .number(milliseconds.mean)
        record["milliseconds_p99"] = .number(milliseconds.percentile(0.99))
        return record
    }
}

/// Collects results of actions that finish later, inside one simulation.
final class Collector<Value> {
    var value: Value
    init(_ value: Value) { self.value = value }
}

extension Simulation {
    /// Resolves the names of `owners` (each from a random online node that is neither the owner
    /// nor excluded by `resolverAllowed`), one every `spacing`, and runs until idle.
    func resolveNames(
        of owners: [Int], spacing: TimeAmount = .milliseconds(20), resolverAllowed: (Int) -> Bool = { _ in true }
    ) -> ResolveSummary {
        let summary = Collector(ResolveSummary())
        let candidates = onlineNodes.filter(resolverAllowed)
        for (offset, owner) in owners.enumerated() {
            guard let name = nodes[owner].ownName else { continue }
            var resolver = owner
            while resolver == owner, candidates.count > 1 {
                resolver = candidates[Int.random(in: 0..<candidates.count, using: &generator)]
            }
            let holder = nodes[owner].publicKey
            schedule(after: spacing * Int64(offset)) { simulation in
                simulation.resolve(name, from: resolver, holder: holder) { _, outcome in summary.value.add(outcome) }
            }
        }
        runUntilIdle()
        return summary.value
    }
}
