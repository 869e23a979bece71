import Foundation
import Logging
import NIOCore
import SluiceRedis
import Synchronization

/// Why a presented key was refused. All of these answer 401 `invalid_api_key`; the reason is
/// for logs and metrics only.
public enum KeyRejection: String, Sendable, Equatable {
    case malformed, unknown, wrongSecret, expired, revoked, unavailable
}

public enum KeyAuthentication: Sendable, Equatable {
    case valid(ResolvedKey)
    case rejected(KeyRejection)
}

public struct KeyResolverSettings: Sendable {
    /// Replica memory: fresh for `memoryTTL`; after that still used for `staleTTL` if both Redis
    /// and PostgreSQL fail (cached keys keep working through a database outage).
    public var memoryTTL: Duration = .seconds(5)
    public var staleTTL: Duration = .seconds(60)
    public var negativeTTL: Duration = .seconds(2)
    public var redisTTL: Duration = .seconds(60)
    public var memoryCapacity = 100_000
    /// The pub/sub channel revocations and rotations are announced on.
    public var invalidationChannel = KeyResolver.invalidationChannel

    public init() {}
}

/// Resolves key ids: replica memory → Redis → PostgreSQL, one database query per key id at a
/// time (single flight), unknown ids cached briefly. Revocation and rotation publish the key id
/// on `invalidationChannel`; every replica drops it at once, and TTLs bound staleness if a
/// message is lost.
public final class KeyResolver: Sendable {
    public static let invalidationChannel = "sl:keys:invalidate"

    private struct Cached: Sendable {
        let key: ResolvedKey?  // nil: known not to exist
        let fetched: ContinuousClock.Instant
    }

    private let database: any KeyLookup
    private let redis: RedisClient?
    private let hasher: KeyHasher
    private let settings: KeyResolverSettings
    private let logger: Logger
    private let memory = Mutex<[String: Cached]>([:])
    /// Key ids invalidated within `redisTTL`: read from PostgreSQL, not Redis, so a lookup that
    /// raced the revocation cannot serve the old state back from Redis.
    private let recentlyInvalidated = Mutex<[String: ContinuousClock.Instant]>([:])
    private let inFlight = Mutex<[String: Task<ResolvedKey?, any Error>]>([:])

    public init(database: any KeyLookup, redis: RedisClient?, hasher: KeyHasher,
                settings: KeyResolverSettings = .init(), logger: Logger = Logger(label: "sluice.keys")) {
        self.database = database
        self.redis = redis
        self.hasher = hasher
        self.settings = settings
        self.logger = logger
    }

    /// Checks a presented `Authorization: Bearer` value end to end.
    public func authenticate(_ presented: some StringProtocol, now: Date = Date()) async -> KeyAuthentication {
        guard let key = APIKey(parsing: presented) else { return .rejected(.malformed) }
        let resolved: ResolvedKey?
        do {
            resolved = try await resolve(key.keyID)
        } catch {
            return .rejected(.unavailable)
        }
        guard let resolved else { return .rejected(.unknown) }
        guard hasher.matches(key.secret, storedHash: resolved.secretHash) else { return .rejected(.wrongSecret) }
        if resolved.revoked { return .rejected(.revoked) }
        guard resolved.isUsable(at: now) else { return .rejected(.expired) }
        return .valid(resolved)
    }

    /// The key with this id, or nil if there is none. Throws only when no tier can answer and
    /// nothing (not even stale) is cached.
    public func resolve(_ keyID: String) async throws -> ResolvedKey? {
        let now = ContinuousClock.now
        let cached = memory.withLock { $0[keyID] }
        if let cached {
            let ttl = cached.key == nil ? settings.negativeTTL : settings.memoryTTL
            if now - cached.fetched < ttl { return cached.key }
        }
        do {
            return try await singleFlight(keyID)
        } catch {
            if let cached, cached.key != nil, now - cached.fetched < settings.staleTTL {
                logger.warning("key stores unreachable, using a stale cached key", metadata: ["key_id": "\(keyID)"])
                return cached.key
            }
            throw error
        }
    }

    /// Drops one key from this replica's memory (the pub/sub handler calls this).
    public func invalidate(_ keyID: String) {
        let now = ContinuousClock.now
        memory.withLock { $0[keyID] = nil }
        recentlyInvalidated.withLock { recent in
            if recent.count >= settings.memoryCapacity {
                recent = recent.filter { now - $0.value < settings.redisTTL }
            }
            recent[keyID] = now
        }
    }

    /// A subscriber for this resolver's invalidation channel; run it, and `followInvalidations`.
    public func makeSubscriber(redis: RedisClient) -> RedisSubscriber {
        RedisSubscriber(client: redis, channels: [settings.invalidationChannel])
    }

    /// Consumes invalidation messages until the subscriber's stream ends. Run it next to the
    /// `RedisSubscriber` subscribed to `invalidationChannel`. Messages carry key ids; after a
    /// reconnect the whole memory cache is dropped, since messages may have been missed.
    public func followInvalidations(_ events: AsyncStream<RedisSubscriberEvent>) async {
        for await event in events {
            switch event {
            case .message(_, let payload):
                for keyID in String(buffer: payload).split(separator: ",") { invalidate(String(keyID)) }
            case .subscribed:
                memory.withLock { $0.removeAll() }
            case .disconnected:
                break
            }
        }
    }

    /// For the admin side: drops the Redis copy and tells every replica. Best effort: if Redis is
    /// down the TTLs still bound how long a replica can keep the old state.
    public static func publishInvalidation(_ keyIDs: [String], redis: RedisClient, channel: String = invalidationChannel,
                                           logger: Logger) async {
        guard !keyIDs.isEmpty else { return }
        do {
            // One DEL per key: keys of different ids hash to different Redis Cluster slots, and a
            // multi-key DEL across slots fails with CROSSSLOT.
            for keyID in keyIDs { _ = try await redis.send(RedisCommand("DEL", cacheKey(keyID))) }
            _ = try await redis.send(RedisCommand("PUBLISH", channel, keyIDs.joined(separator: ",")))
        } catch {
            logger.error("could not publish key invalidation; replicas catch up within their cache TTLs",
                         metadata: ["error": "\(error)", "keys": "\(keyIDs.count)"])
        }
    }

    static func cacheKey(_ keyID: String) -> String { "sl:key:\(keyID)" }

    private func singleFlight(_ keyID: String) async throws -> ResolvedKey? {
        let task = inFlight.withLock { flights in
            if let running = flights[keyID] { return running }
            let task = Task { try await self.fetch(keyID) }
            flights[keyID] = task
            return task
        }
        defer { inFlight.withLock { if $0[keyID] == task { $0[keyID] = nil } } }
        return try await task.value
    }

    private func fetch(_ keyID: String) async throws -> ResolvedKey? {
        let skipRedis = recentlyInvalidated.withLock { recent in
            guard let at = recent[keyID] else { return false }
            if ContinuousClock.now - at < settings.redisTTL { return true }
            recent[keyID] = nil
            return false
        }
        var cacheInRedis = true
        if !skipRedis {
            do {
                if let fromRedis = try await readRedis(keyID) {
                    remember(keyID, fromRedis)
                    return fromRedis
                }
            } catch {
                // Unreachable or stuck: PostgreSQL answers, and the request does not wait on
                // Redis a second time just to cache that answer.
                cacheInRedis = false
            }
        }
        let fromDatabase = try await database.lookupKey(keyID)
        remember(keyID, fromDatabase)
        if let fromDatabase, cacheInRedis { await writeRedis(fromDatabase) }
        return fromDatabase
    }

    private func remember(_ keyID: String, _ key: ResolvedKey?) {
        let now = ContinuousClock.now
        memory.withLock { memory in
            if memory.count >= settings.memoryCapacity {
                // Bounded: drop entries no longer fresh (their stale copies go too), then anything if still full.
                memory = memory.filter { now - $0.value.fetched < settings.memoryTTL }
                if memory.count >= settings.memoryCapacity { memory.removeAll() }
            }
            memory[keyID] = Cached(key: key, fetched: now)
        }
    }

    /// The Redis tier: the cached key, or nil on a miss (or an unreadable entry). Throws when
    /// Redis did not answer.
    private func readRedis(_ keyID: String) async throws(RedisClientError) -> ResolvedKey? {
        guard let redis else { return nil }
        guard let bytes = try await redis.send(RedisCommand("GET", Self.cacheKey(keyID))).bytes else { return nil }
        return try? JSONDecoder().decode(ResolvedKey.self, from: Data(bytes.readableBytesView))
    }

    private func writeRedis(_ key: ResolvedKey) async {
        guard let redis, let json = try? JSONCoding.string(key) else { return }
        let ttl = settings.redisTTL.components.seconds
        _ = try? await redis.send(RedisCommand("SET", Self.cacheKey(key.keyID), json, "EX", Int(ttl)))
    }
}
