/// What a key may do besides its models and limits, enforced before any upstream call. Each
/// part is optional; an absent part allows everything.
public struct KeyScope: Sendable, Equatable, Codable {
    /// The inference paths the key may call (`/v1/chat/completions`, `/v1/completions`,
    /// `/v1/embeddings`, `/v1/models`, `/v1/realtime`; `/inference.GRPCInferenceService`: the gRPC service).
    public var endpoints: [String]?
    /// The source networks (CIDR) the key may be used from.
    public var networks: [String]?
    /// The most output tokens one request may ask for; a request naming none is sent with it.
    public var maxOutputTokens: Int?

    public static let endpointPaths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/realtime",
                                       "/inference.GRPCInferenceService"]

    public init(endpoints: [String]? = nil, networks: [String]? = nil, maxOutputTokens: Int? = nil) {
        self.endpoints = endpoints
        self.networks = networks
        self.maxOutputTokens = maxOutputTokens
    }

    public var isEmpty: Bool { endpoints == nil && networks == nil && maxOutputTokens == nil }

    public func allows(endpoint path: String) -> Bool {
        endpoints.map { $0.contains(path) } ?? true
    }

    enum CodingKeys: String, CodingKey {
        case endpoints, networks
        case maxOutputTokens = "max_output_tokens"
    }
}
