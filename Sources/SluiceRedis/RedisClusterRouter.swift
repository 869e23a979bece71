import Logging
import NIOCore
import Synchronization

/// Sends commands to the master that serves their key's slot in a Redis Cluster.
///
/// - The slot map comes from `CLUSTER SLOTS` (asked of a known master, else of a seed) and is
///   refreshed when the cluster says it changed: `MOVED`, a node that cannot be reached, or
///   `CLUSTERDOWN`. Refreshes are coalesced and at most one per `refreshInterval`.
/// - `MOVED` patches the map at once and sends again; `ASK` sends once to the named node
///   after `ASKING`; `TRYAGAIN` and `CLUSTERDOWN` wait a little and send again.
/// - A command is sent again only when it cannot have run: a redirection, or no connection.
///   A connection lost after sending, or a timeout, is the caller's to handle (it may have run).
/// - One pool per master, made on first use; pools of nodes that left the map are closed.
final class RedisClusterRouter: Sendable {
    private struct State: Sendable {
        var map = RedisClusterSlotMap()
        var pools: [RedisNodeAddress: RedisNodePool] = [:]
        var refresh: Task<Void, Never>?
        var refreshed: ContinuousClock.Instant?
        var isShutdown = false
    }

    let seeds: [RedisNodeAddress]
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    static let maxAttempts = 6
    static let refreshInterval: Duration = .milliseconds(100)

    init(seeds: [RedisNodeAddress], configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.seeds = seeds
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// `command`, then `trailer` (a `WAIT`, when given) right after it on the same connection.
    func send(_ command: RedisCommand, timeout: TimeAmount?,
              then trailer: RedisCommand? = nil) async throws(RedisClientError) -> (reply: RESPValue, trailer: RESPValue?) {
        let slot = command.routingKey.map(RedisHashSlot.of)
        var asking: RedisNodeAddress?
        var redirected: RedisNodeAddress?
        var lastError = RedisClientError.connectFailed("no Redis Cluster node answered")
        for attempt in 0..<Self.maxAttempts {
            var target = asking ?? redirected
            redirected = nil
            if target == nil { target = try await master(for: slot) }
            guard let node = target else {
                await refresh(after: .milliseconds(20 * attempt))
                continue
            }
            let connection: RedisConnection
            do {
                connection = try await pool(for: node).connection()
            } catch {
                // Nothing was sent: find where the slot lives now (a failover) and try there.
                if error == .shutdown { throw error }
                lastError = error
                asking = nil
                await refresh(after: .milliseconds(20 * (attempt + 1)))
                continue
            }
            do {
                if asking == nil, trailer == nil { return (try await connection.send(command, timeout: timeout), nil) }
                let commands = (asking == nil ? [] : [RedisCommand("ASKING")]) + [command] + (trailer.map { [$0] } ?? [])
                let replies = await connection.sendPipelined(commands, timeout: timeout)
                let reply = try replies[asking == nil ? 0 : 1].get()
                return (reply, try trailer.map { _ throws(RedisClientError) in try replies[replies.count - 1].get() })
            } catch {
                guard let redirect = RedisClusterRedirect(error) else {
                    if error == .connectionClosed || error == .timeout { startRefresh() }
                    throw error
                }
                lastError = error
                asking = nil
                switch redirect {
                case .moved(let slot, let to):
                    state.withLock { $0.map.assign(slot...slot, to: to) }
                    startRefresh()
                    // Sent where the cluster says, even if the routing key was not the key it
                    // went by (a command shape `firstKey` does not know).
                    redirected = to
                case .ask(_, let to):
                    asking = to
                case .tryAgain:
                    try? await Task.sleep(for: .milliseconds(10 * (attempt + 1)))
                case .clusterDown:
                    await refresh(after: .milliseconds(50 * (attempt + 1)))
                }
            }
        }
        throw lastError
    }

    /// Sends `command` to every master (`SCRIPT LOAD`), each reply in the masters' order.
    func sendToEveryMaster(_ command: RedisCommand, timeout: TimeAmount?) async throws(RedisClientError) -> [RESPValue] {
        if state.withLock({ $0.map.masters.isEmpty }) { await refresh() }
        let masters = state.withLock { $0.map.masters }
        guard !masters.isEmpty else { throw .connectFailed("no Redis Cluster node answered") }
        var replies: [RESPValue] = []
        for master in masters {
            replies.append(try await pool(for: master).connection().send(command, timeout: timeout))
        }
        return replies
    }

    /// A connection for pub/sub: to any reachable node (the cluster carries a publish to all).
    func connectSubscriber(on eventLoop: any EventLoop,
                           onPush: @escaping @Sendable (RESPValue) -> Void) async throws(RedisClientError) -> RedisConnection {
        let candidates = state.withLock { $0.map.masters.shuffled() } + seeds.shuffled()
        var lastError = RedisClientError.connectFailed("no Redis Cluster node answered")
        for node in candidates {
            do {
                return try await pool(for: node).connector.connect(on: eventLoop, onPush: onPush)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    private func master(for slot: UInt16?) async throws(RedisClientError) -> RedisNodeAddress? {
        let known: (RedisNodeAddress?, Bool) = state.withLock { state in
            (slot.flatMap { state.map.master(for: $0) } ?? (slot == nil ? state.map.masters.randomElement() : nil),
             state.isShutdown)
        }
        if known.1 { throw .shutdown }
        return known.0
    }

    private func pool(for node: RedisNodeAddress) throws(RedisClientError) -> RedisNodePool {
        let result: Result<RedisNodePool, RedisClientError> = state.withLock { state in
            if state.isShutdown { return .failure(.shutdown) }
            if let pool = state.pools[node] { return .success(pool) }
            do {
                let pool = try RedisNodePool(address: node, configuration: configuration, eventLoopGroup: eventLoopGroup)
                state.pools[node] = pool
                return .success(pool)
            } catch {
                return .failure(.connectFailed("\(error)"))
            }
        }
        return try result.get()
    }

    /// Waits `delay` (a backoff between attempts), then for a refresh of the slot map.
    private func refresh(after delay: Duration = .zero) async {
        if delay > .zero { try? await Task.sleep(for: delay) }
        await startRefresh()?.value
    }

    /// The refresh in flight, or a new one unless the last was under `refreshInterval` ago.
    @discardableResult
    private func startRefresh() -> Task<Void, Never>? {
        state.withLock { state in
            if let running = state.refresh { return running }
            if state.isShutdown { return nil }
            if let last = state.refreshed, ContinuousClock.now - last < Self.refreshInterval { return nil }
            let candidates = state.map.masters + seeds.filter { !state.map.masters.contains($0) }
            let task = Task { await self.loadMap(from: candidates) }
            state.refresh = task
            return task
        }
    }

    private func loadMap(from candidates: [RedisNodeAddress]) async {
        var loaded: RedisClusterSlotMap?
        for node in candidates {
            do {
                let reply = try await pool(for: node).connection().send(RedisCommand("CLUSTER", "SLOTS"))
                loaded = try RedisClusterSlotMap(clusterSlots: reply, asked: node)
                if loaded?.masters.isEmpty == false { break }
            } catch {
                continue
            }
        }
        let retired: [RedisNodePool] = state.withLock { state in
            state.refresh = nil
            state.refreshed = .now
            guard let loaded, !loaded.masters.isEmpty else { return [] }
            if loaded != state.map {
                logger.info("redis cluster slot map changed", metadata: ["masters": "\(loaded.masters.map(\.description))"])
            }
            state.map = loaded
            let gone = state.pools.keys.filter { !loaded.masters.contains($0) && !seeds.contains($0) }
            return gone.compactMap { state.pools.removeValue(forKey: $0) }
        }
        if loaded == nil { logger.warning("no redis cluster node answered CLUSTER SLOTS") }
        for pool in retired { pool.shutdown() }
    }

    func shutdown() {
        let pools = state.withLock { state in
            state.isShutdown = true
            state.refresh?.cancel()
            defer { state.pools = [:] }
            return Array(state.pools.values)
        }
        for pool in pools { pool.shutdown() }
    }
}
