import Logging
import NIOCore
import Synchronization

/// Sends commands to the master that Redis Sentinel names, and follows it through failovers.
///
/// - The master's address comes from the first sentinel that answers
///   `SENTINEL get-master-addr-by-name`, asked again at most every `checkInterval` while
///   commands flow, and at once when the master cannot be reached or says `READONLY`.
/// - Every new connection checks `ROLE` and refuses a server that is not a master, so a
///   demoted master that comes back is never written to.
/// - A command is sent again only when it cannot have run: no connection, or `READONLY` (the
///   server refused the write). A connection lost after sending, or a timeout, is the caller's.
final class RedisSentinelRouter: Sendable {
    private struct State: Sendable {
        var master: RedisNodePool?
        var lookup: Task<Void, Never>?
        var checked: ContinuousClock.Instant?
        var isShutdown = false
    }

    let sentinels: [RedisNodeAddress]
    let masterName: String
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    static let checkInterval: Duration = .seconds(1)
    static let maxAttempts = 4

    init(sentinels: [RedisNodeAddress], masterName: String, configuration: RedisConfiguration,
         eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.sentinels = sentinels
        self.masterName = masterName
        var master = configuration
        master.requiresMasterRole = true
        self.configuration = master
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// `command`, then `trailer` (a `WAIT`, when given) right after it on the same connection.
    func send(_ command: RedisCommand, timeout: TimeAmount?,
              then trailer: RedisCommand? = nil) async throws(RedisClientError) -> (reply: RESPValue, trailer: RESPValue?) {
        var lastError = RedisClientError.connectFailed("no sentinel named a master \(masterName)")
        for attempt in 0..<Self.maxAttempts {
            guard let pool = try await masterPool() else {
                await lookUp(after: .milliseconds(50 * attempt))
                continue
            }
            let connection: RedisConnection
            do {
                connection = try await pool.connection()
            } catch {
                if error == .shutdown { throw error }
                lastError = error
                await lookUp(after: .milliseconds(50 * (attempt + 1)))
                continue
            }
            do {
                guard let trailer else { return (try await connection.send(command, timeout: timeout), nil) }
                let replies = await connection.sendPipelined([command, trailer], timeout: timeout)
                return (try replies[0].get(), try replies[1].get())
            } catch {
                if error.serverErrorCode == "READONLY" {
                    // A demoted master refused the write: nothing ran.
                    lastError = error
                    connection.close()
                    await lookUp(after: .milliseconds(50 * (attempt + 1)))
                    continue
                }
                if error == .connectionClosed || error == .timeout { startLookUp() }
                throw error
            }
        }
        throw lastError
    }

    func connectSubscriber(on eventLoop: any EventLoop,
                           onPush: @escaping @Sendable (RESPValue) -> Void) async throws(RedisClientError) -> RedisConnection {
        guard let pool = try await masterPool() else { throw .connectFailed("no sentinel named a master \(masterName)") }
        return try await pool.connector.connect(on: eventLoop, onPush: onPush)
    }

    /// The master's pool; starts a background check when the last is `checkInterval` old.
    private func masterPool() async throws(RedisClientError) -> RedisNodePool? {
        let (pool, stale, isShutdown) = state.withLock { state in
            (state.master, state.checked.map { ContinuousClock.now - $0 > Self.checkInterval } ?? true, state.isShutdown)
        }
        if isShutdown { throw .shutdown }
        if pool == nil {
            await lookUp()
            return state.withLock { $0.master }
        }
        if stale { startLookUp() }
        return pool
    }

    private func lookUp(after delay: Duration = .zero) async {
        if delay > .zero { try? await Task.sleep(for: delay) }
        await startLookUp()?.value
    }

    @discardableResult
    private func startLookUp() -> Task<Void, Never>? {
        state.withLock { state in
            if let running = state.lookup { return running }
            if state.isShutdown { return nil }
            let task = Task { await self.askSentinels() }
            state.lookup = task
            return task
        }
    }

    private func askSentinels() async {
        var found: RedisNodeAddress?
        for sentinel in sentinels {
            var asking = configuration
            asking.host = sentinel.host
            asking.port = sentinel.port
            asking.username = nil
            asking.password = nil
            asking.database = 0
            asking.requiresMasterRole = false
            do {
                let connection = try await RedisConnector(configuration: asking).connect(on: eventLoopGroup.next())
                defer { connection.close() }
                let reply = try await connection.send(RedisCommand("SENTINEL", "get-master-addr-by-name", masterName))
                if let parts = reply.array, parts.count == 2, let host = parts[0].string,
                   let port = parts[1].string.flatMap({ Int($0) }) {
                    found = RedisNodeAddress(host: host, port: port)
                    break
                }
            } catch {
                continue
            }
        }
        let retired: RedisNodePool? = state.withLock { state in
            state.lookup = nil
            state.checked = .now
            guard let found, found != state.master?.address, !state.isShutdown else { return nil }
            guard let pool = try? RedisNodePool(address: found, configuration: configuration, eventLoopGroup: eventLoopGroup) else {
                return nil
            }
            logger.notice("redis sentinel names a new master", metadata: ["master": "\(found)", "name": "\(masterName)"])
            defer { state.master = pool }
            return state.master
        }
        if found == nil { logger.warning("no redis sentinel named the master", metadata: ["name": "\(masterName)"]) }
        retired?.shutdown()
    }

    func shutdown() {
        let pool = state.withLock { state in
            state.isShutdown = true
            state.lookup?.cancel()
            defer { state.master = nil }
            return state.master
        }
        pool?.shutdown()
    }
}
