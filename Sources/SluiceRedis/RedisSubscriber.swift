import Logging
import NIOCore
import ServiceLifecycle

/// What a subscriber sees: confirmations (after every (re)connect), messages, and drops.
public enum RedisSubscriberEvent: Sendable, Equatable {
    case subscribed(channel: String)
    case message(channel: String, payload: ByteBuffer)
    case disconnected
}

/// Pub/sub on a dedicated connection that resubscribes after every reconnect.
///
/// Run it as a `Service`; read `events` from one task. The event buffer is bounded (oldest
/// events are dropped first when the reader falls behind). A PING every `healthCheckInterval`
/// notices a Redis that stopped answering (paused, network gone) and reconnects.
public final class RedisSubscriber: Service, Sendable {
    public let events: AsyncStream<RedisSubscriberEvent>
    private let continuation: AsyncStream<RedisSubscriberEvent>.Continuation
    private let client: RedisClient
    private let channels: [String]
    private let healthCheckInterval: Duration

    public init(client: RedisClient, channels: [String], bufferSize: Int = 1024,
                healthCheckInterval: Duration = .seconds(1)) {
        precondition(!channels.isEmpty, "a subscriber needs at least one channel")
        (events, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        self.client = client
        self.channels = channels
        self.healthCheckInterval = healthCheckInterval
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.subscribeUntilCancelled()
        }
        continuation.finish()
    }

    private func subscribeUntilCancelled() async {
        var failures = 0
        let backoff = client.configuration.reconnectBackoff
        while !Task.isCancelled {
            do {
                try await subscribeOnce()
                failures = 0
            } catch {
                failures += 1
                if failures == 1 {
                    client.logger.warning("redis subscriber lost its connection", metadata: ["error": "\(error)"])
                }
            }
            continuation.yield(.disconnected)
            // One attempt more than failed so far: the wait doubles from the first failure on.
            let delay = RedisConfiguration.backoffDelay(failures: failures + 1, minimum: backoff.minimum,
                                                        maximum: backoff.maximum)
            try? await Task.sleep(for: .nanoseconds(delay.nanoseconds))
        }
    }

    /// Connects, subscribes, and returns when the connection is gone (or the task cancelled).
    private func subscribeOnce() async throws {
        let continuation = self.continuation
        let connection = try await client.connectSubscriber(on: client.eventLoopGroup.next()) { push in
            Self.deliver(push, to: continuation)
        }
        defer { connection.close() }
        try await connection.sendWithoutReply(RedisCommand("SUBSCRIBE", channels))
        let interval = healthCheckInterval
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await connection.closeFuture.get()
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    do {
                        _ = try await connection.send(RedisCommand("PING"))
                    } catch {
                        return
                    }
                }
            }
            await group.next()
            group.cancelAll()
            connection.close()
        }
    }

    private static func deliver(_ push: RESPValue, to continuation: AsyncStream<RedisSubscriberEvent>.Continuation) {
        guard let parts = push.array, let kind = parts.first?.string, parts.count >= 3,
              let channel = parts[1].string else { return }
        switch kind {
        case "message":
            continuation.yield(.message(channel: channel, payload: parts[2].bytes ?? ByteBuffer()))
        case "subscribe":
            continuation.yield(.subscribed(channel: channel))
        default:
            break
        }
    }
}
