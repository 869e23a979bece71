import Logging
import SluiceConcurrency
import SluiceRedis
import Synchronization

/// Group commit per tenant, for admits and settles. Per tenant at most one call is in flight;
/// items that arrive meanwhile wait and go together in the next call (up to `maxBatch`). At low
/// load an item goes alone and at once; under load one `EVALSHA` carries many, so Redis pays
/// the script's fixed cost once per batch, and the wait is never longer than one call.
///
/// Bounded: past `capacity` waiting items a call fails at once with `.overloaded` (the caller's
/// failure path answers). A caller that does not wait (`submit`) costs no task of its own; the
/// batch runs on the event loop of the item that started it, so it wakes no other thread.
final class TenantBatcher<Item: Sendable, Outcome: Sendable>: Sendable {
    typealias Completion = @Sendable (Result<Outcome, RedisClientError>) -> Void
    /// Sends one batch of one tenant: an outcome per item, in order.
    typealias Send = @Sendable (_ tenant: String, _ items: [Item]) async -> Result<[Outcome], RedisClientError>

    private struct Waiting: Sendable {
        let item: Item
        let completion: Completion
    }

    private struct State: Sendable {
        var queues: [String: [Waiting]] = [:]
        var draining: Set<String> = []
        var waiting = 0
    }

    private let send: Send
    private let state = Mutex(State())
    let maxBatch: Int
    let capacity: Int

    init(maxBatch: Int = 128, capacity: Int = 100_000, send: @escaping Send) {
        self.send = send
        self.maxBatch = maxBatch
        self.capacity = capacity
    }

    func run(_ item: Item, tenant: String) async throws(RedisClientError) -> Outcome {
        try await withCheckedContinuation { continuation in
            submit(item, tenant: tenant) { continuation.resume(returning: $0) }
        }.get()
    }

    /// Queues an item; `completion` runs once it is done (or refused), on the batch's thread.
    func submit(_ item: Item, tenant: String, completion: @escaping Completion) {
        let start: Bool? = state.withLock { state in
            guard state.waiting < capacity else { return nil }
            state.queues[tenant, default: []].append(Waiting(item: item, completion: completion))
            state.waiting += 1
            return state.draining.insert(tenant).inserted
        }
        switch start {
        case nil: completion(.failure(.overloaded))
        case true?: Task(executorPreference: EventLoopTaskExecutor.current) { await self.drain(tenant) }
        case false?: break
        }
    }

    /// Sends the tenant's waiting items, a batch per call, until none are left.
    private func drain(_ tenant: String) async {
        while true {
            let batch: [Waiting] = state.withLock { state in
                let queue = state.queues.removeValue(forKey: tenant) ?? []
                let batch = Array(queue.prefix(maxBatch))
                if queue.count > batch.count { state.queues[tenant] = Array(queue.dropFirst(batch.count)) }
                state.waiting -= batch.count
                if batch.isEmpty { state.draining.remove(tenant) }
                return batch
            }
            guard !batch.isEmpty else { return }
            let result = await send(tenant, batch.map(\.item))
            for (index, waiting) in batch.enumerated() {
                waiting.completion(result.map { $0[index] })
            }
        }
    }
}

extension TenantBatcher where Item == SettleRequest, Outcome == SettleOutcome {
    /// Settles: idempotent, so a failed call is retried, unless Redis is stuck (timeout), the
    /// queue is full, or Redis refused the script.
    static func settles(store: RedisLimiterStore) -> TenantBatcher {
        TenantBatcher { tenant, requests in
            var attempt = 0
            while true {
                do throws(RedisClientError) {
                    return .success(try await store.settle(tenantID: tenant, requests))
                } catch {
                    attempt += 1
                    if attempt >= 3 || error.serverErrorCode != nil || error == .timeout || error == .overloaded {
                        return .failure(error)
                    }
                    try? await Task.sleep(for: .milliseconds(20 * attempt))
                }
            }
        }
    }
}

/// One admit of a batch: the request and the limits that apply to it.
struct AdmitItem: Sendable {
    var request: AdmitRequest
    let plan: LimitPlan
}

extension TenantBatcher where Item == AdmitItem, Outcome == AdmitDecision {
    /// Admits: never retried once a call may have run (it must not run twice). A batch whose
    /// budgets' spend Redis has lost is seeded from the ledger first, then decided; a request
    /// whose replica clock disagrees with Redis's about the day is tried once more. What still
    /// cannot be decided (the ledger unreachable) is `.unavailable`: the failure policy answers.
    static func admits(store: RedisLimiterStore, spendSource: any SpendSource, memory: SpendMemory,
                       logger: Logger) -> TenantBatcher {
        TenantBatcher { tenant, items in
            var items = items
            var decisions = [AdmitDecision?](repeating: nil, count: items.count)
            var undecided = Array(items.indices)
            for attempt in 0..<3 where !undecided.isEmpty {
                let reply: AdmitBatchReply
                do throws(RedisClientError) {
                    reply = try await store.admit(tenantID: tenant, undecided.map { items[$0] })
                } catch {
                    if attempt == 0 { return .failure(error) }
                    break
                }
                switch reply {
                case .unseeded(let month, let day):
                    do {
                        let sums = try await spendSource.spend(tenantID: tenant, month: month, day: day)
                        _ = try await store.seed(tenantID: tenant, month: month, day: day, sums: sums)
                    } catch {
                        logger.error("spend could not be rebuilt from the ledger; applying the failure policy",
                                     metadata: ["tenant_id": "\(tenant)", "error": "\(error)"])
                        return .success(decisions.map { $0 ?? .unavailable })
                    }
                case .decided(let decided, let spends, let month, let day):
                    memory.learn(tenantID: tenant, spends, month: month, day: day)
                    for (index, decision) in zip(undecided, decided) { decisions[index] = decision }
                    undecided = undecided.filter { decisions[$0] == nil }
                    if !undecided.isEmpty {
                        try? await Task.sleep(for: .milliseconds(50))
                        for index in undecided { items[index].request.admissionDay = SpendPeriod.today }
                    }
                }
            }
            return .success(decisions.map { $0 ?? .unavailable })
        }
    }
}
