import NIOCore
import Synchronization

/// The connections to one Redis server: a few multiplexed, pipelined connections spread over
/// the event loops, each reconnected on demand with backoff.
final class RedisNodePool: Sendable {
    let address: RedisNodeAddress
    let connector: RedisConnector
    private let slots: [RedisConnectionSlot]
    private let nextSlot = Atomic<Int>(0)

    /// `configuration` with its host and port replaced by `address`.
    init(address: RedisNodeAddress, configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup) throws {
        var configuration = configuration
        configuration.host = address.host
        configuration.port = address.port
        self.address = address
        let connector = try RedisConnector(configuration: configuration)
        self.connector = connector
        self.slots = (0..<max(1, configuration.poolSize)).map { _ in
            RedisConnectionSlot(configuration: configuration, connector: connector, eventLoop: eventLoopGroup.next())
        }
    }

    /// A connection, opening one if needed. A failure here means nothing was sent.
    func connection() async throws(RedisClientError) -> RedisConnection {
        try await pickSlot().connection()
    }

    /// Prefers a connection on the caller's event loop (no thread hop); otherwise round-robin.
    private func pickSlot() -> RedisConnectionSlot {
        if slots.count > 1 {
            for slot in slots where slot.eventLoop.inEventLoop { return slot }
        }
        let index = nextSlot.add(1, ordering: .relaxed).oldValue
        return slots[index % slots.count]
    }

    func shutdown() {
        for slot in slots { slot.shutdown() }
    }
}
