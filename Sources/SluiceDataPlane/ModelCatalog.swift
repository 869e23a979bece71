import SluiceUpstream

/// A configured model: where it runs, how many output tokens it may produce, what it costs.
public struct ModelRoute: Sendable {
    public let name: String
    public let backends: [Backend]
    /// Output tokens reserved when a request names no `max_tokens`, and the cap on what it may name.
    public let defaultOutputTokens: Int
    public let maxOutputTokens: Int
    public let inputUSDPerMillion: Double
    public let outputUSDPerMillion: Double

    public init(name: String, backends: [Backend], defaultOutputTokens: Int = 1_024, maxOutputTokens: Int = 8_192,
                inputUSDPerMillion: Double = 0, outputUSDPerMillion: Double = 0) {
        self.name = name
        self.backends = backends
        self.defaultOutputTokens = defaultOutputTokens
        self.maxOutputTokens = maxOutputTokens
        self.inputUSDPerMillion = inputUSDPerMillion
        self.outputUSDPerMillion = outputUSDPerMillion
    }

    func costMicroUSD(prompt: Int, completion: Int) -> Int64 {
        Int64((Double(prompt) * inputUSDPerMillion + Double(completion) * outputUSDPerMillion).rounded(.up))
    }
}

public struct ModelCatalog: Sendable {
    public let routes: [String: ModelRoute]

    public init(_ routes: [ModelRoute]) {
        self.routes = Dictionary(routes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Every backend of every model (for health checks and shutdown).
    public var backends: [Backend] { routes.values.flatMap(\.backends) }
}
