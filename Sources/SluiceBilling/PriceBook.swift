import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The price catalogue this replica bills with: the configuration's prices until the database's
/// catalogue is read, then the database's, re-read every `refreshInterval`. A new price version
/// must take effect at least `PriceStore.minimumLead` after it is added, longer than a refresh,
/// so every replica knows it before it applies.
public final class PriceBook: Sendable {
    private let catalogue: Mutex<PriceCatalogue>
    private let versionsRead = Atomic<Int>(-1)

    /// How many versions the last read of the database's catalogue had; nil before the first.
    public var databaseVersions: Int? {
        let count = versionsRead.load(ordering: .relaxed)
        return count < 0 ? nil : count
    }

    public init(_ initial: PriceCatalogue) {
        self.catalogue = Mutex(initial)
    }

    public func price(for model: String, at time: Date = Date()) -> ModelPrice? {
        catalogue.withLock { $0.price(for: model, at: time) }
    }

    public func replace(with fresh: PriceCatalogue) {
        catalogue.withLock { $0 = fresh }
        versionsRead.store(fresh.all.count, ordering: .relaxed)
    }
}

/// Seeds the database's catalogue from the configuration (models it has no price for), then
/// keeps the `PriceBook` in step with it.
public struct PriceBookRefresher: Service {
    let book: PriceBook
    let store: PriceStore
    let seed: [ModelPrice]
    let refreshInterval: Duration
    let logger: Logger

    public init(book: PriceBook, store: PriceStore, seed: [ModelPrice], refreshInterval: Duration = .seconds(10),
                logger: Logger) {
        self.book = book
        self.store = store
        self.seed = seed
        self.refreshInterval = refreshInterval
        self.logger = logger
    }

    public func run() async throws {
        var seeded = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                if !seeded {
                    try await store.seed(seed)
                    seeded = true
                }
                book.replace(with: PriceCatalogue(try await store.list()))
            } catch {
                logger.warning("price catalogue not refreshed; billing with the last one read",
                               metadata: ["error": "\(String(reflecting: error))"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: refreshInterval) }
        }
    }
}
