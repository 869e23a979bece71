import Foundation
import SluiceBilling
import SluiceUpstream

/// A configured model: where it runs, how many output tokens it may produce, what it costs.
public struct ModelRoute: Sendable {
    public let name: String
    /// Its OpenAI HTTP backends, and its KServe v2 gRPC ones (`grpc://`): one list in the
    /// configuration, each request goes to the kind that speaks its protocol.
    public let backends: [Backend]
    public let grpcBackends: [Backend]
    /// Output tokens reserved when a request names no `max_tokens`, and the cap on what it may name.
    public let defaultOutputTokens: Int
    public let maxOutputTokens: Int
    public let inputUSDPerMillion: Double
    public let outputUSDPerMillion: Double
    /// Defaults to the input price.
    public let cachedInputUSDPerMillion: Double?

    public init(name: String, backends: [Backend], defaultOutputTokens: Int = 1_024, maxOutputTokens: Int = 8_192,
                inputUSDPerMillion: Double = 0, outputUSDPerMillion: Double = 0, cachedInputUSDPerMillion: Double? = nil) {
        self.cachedInputUSDPerMillion = cachedInputUSDPerMillion
        self.name = name
        self.backends = backends.filter { !$0.speaksGRPC }
        self.grpcBackends = backends.filter(\.speaksGRPC)
        self.defaultOutputTokens = defaultOutputTokens
        self.maxOutputTokens = maxOutputTokens
        self.inputUSDPerMillion = inputUSDPerMillion
        self.outputUSDPerMillion = outputUSDPerMillion
    }

    /// The configuration's price: it seeds the database's catalogue, and bills until that is read.
    public var configuredPrice: ModelPrice {
        let input = MicroUSD.fromUSD(inputUSDPerMillion)
        return ModelPrice(id: nil, model: name, effectiveFrom: Date(timeIntervalSince1970: 0), inputPerMillion: input,
                          cachedInputPerMillion: cachedInputUSDPerMillion.map(MicroUSD.fromUSD) ?? input,
                          outputPerMillion: MicroUSD.fromUSD(outputUSDPerMillion))
    }
}

public struct ModelCatalog: Sendable {
    public let routes: [String: ModelRoute]

    public init(_ routes: [ModelRoute]) {
        self.routes = Dictionary(routes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// The configuration's prices, as a catalogue (every model, in effect from the start).
    public var configuredPrices: PriceCatalogue { PriceCatalogue(routes.values.map(\.configuredPrice)) }

    /// Every HTTP backend of every model (for health checks and shutdown).
    public var backends: [Backend] { routes.values.flatMap(\.backends) }

    /// Every gRPC backend of every model, each once.
    public var grpcBackends: [Backend] {
        var seen = Set<ObjectIdentifier>()
        return routes.values.flatMap(\.grpcBackends).filter { seen.insert(ObjectIdentifier($0)).inserted }
    }
}
