import SluiceConcurrency
import SluiceRedis
import Synchronization

/// Group commit for settles. Per tenant at most one settle call is in flight; settles that
/// arrive meanwhile wait and go together in the next call (up to `maxBatch`). At low load a
/// settle goes alone and at once; under load one `EVALSHA` carries many, so Redis pays the
/// script's fixed cost once per batch, and the wait is never longer than one call.
///
/// Bounded: past `capacity` waiting settles a call fails at once with `.overloaded` (the caller
/// writes the usage to the ledger directly). A failed call is retried (settle is idempotent)
/// unless Redis is stuck (timeout) or refused the script.
///
/// A caller that does not wait (`submit`) costs no task of its own; the batch runs on the event
/// loop of the request that started it, so a settle wakes no other thread.
final class SettleBatcher: Sendable {
    typealias Completion = @Sendable (Result<SettleOutcome, RedisClientError>) -> Void

    private struct Waiting: Sendable {
        let request: SettleRequest
        let completion: Completion
    }

    private struct State {
        var queues: [String: [Waiting]] = [:]
        var draining: Set<String> = []
        var waiting = 0
    }

    private let store: RedisLimiterStore
    private let state = Mutex(State())
    let maxBatch: Int
    let capacity: Int

    init(store: RedisLimiterStore, maxBatch: Int = 128, capacity: Int = 100_000) {
        self.store = store
        self.maxBatch = maxBatch
        self.capacity = capacity
    }

    func settle(_ request: SettleRequest) async throws(RedisClientError) -> SettleOutcome {
        try await withCheckedContinuation { continuation in
            submit(request) { continuation.resume(returning: $0) }
        }.get()
    }

    /// Queues a settle; `completion` runs once it is done (or refused), on the batch's thread.
    func submit(_ request: SettleRequest, completion: @escaping Completion) {
        let tenant = request.admission.tenantID
        let start: Bool? = state.withLock { state in
            guard state.waiting < capacity else { return nil }
            state.queues[tenant, default: []].append(Waiting(request: request, completion: completion))
            state.waiting += 1
            return state.draining.insert(tenant).inserted
        }
        switch start {
        case nil: completion(.failure(.overloaded))
        case true?: Task(executorPreference: EventLoopTaskExecutor.current) { await self.drain(tenant) }
        case false?: break
        }
    }

    /// Sends the tenant's waiting settles, a batch per call, until none are left.
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
            let result = await send(tenant, batch.map(\.request))
            for (index, waiting) in batch.enumerated() {
                waiting.completion(result.map { $0[index] })
            }
        }
    }

    private func send(_ tenant: String, _ requests: [SettleRequest]) async -> Result<[SettleOutcome], RedisClientError> {
        var attempt = 0
        while true {
            do {
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
