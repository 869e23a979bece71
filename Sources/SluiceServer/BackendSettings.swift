import Foundation
import NIOSSL
import SluiceUpstream

extension GatewayConfiguration {
    /// One backend of a model, as deployed: where it is, its credentials and its TLS.
    /// ```yaml
    /// backends:
    ///   - url: https://vllm-0.models:8000
    ///     api_key_env: VLLM_API_KEY        # or api_key_file: /run/secrets/vllm-key (vLLM --api-key)
    ///     headers: {x-team: ml}             # sent on every request to this backend
    ///     tls: {ca_file: /etc/sluice/models-ca.pem, cert_file: /etc/sluice/client.pem, key_file: /etc/sluice/client.key}
    /// ```
    public struct BackendSettings: Sendable {
        public var url: String
        public var weight = 1
        public var maxConcurrency: Int?
        /// The environment variable, or the file, holding the backend's API key.
        public var apiKeyEnv: String?
        public var apiKeyFile: String?
        /// Read from `apiKeyEnv` or `apiKeyFile` at load; sent as `authorization: Bearer …`.
        public var apiKey: String?
        public var headers: [(String, String)] = []
        public var tls: BackendTLS?

        public struct BackendTLS: Sendable, Equatable {
            /// PEM bundle of the CAs trusted for this backend (instead of the system's).
            public var caFile: String?
            /// A client certificate chain and its key (PEM), for backends that require mTLS.
            public var certFile: String?
            public var keyFile: String?

            public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
                self.caFile = caFile
                self.certFile = certFile
                self.keyFile = keyFile
            }
        }

        public init(url: String, weight: Int = 1, maxConcurrency: Int? = nil) {
            self.url = url
            self.weight = weight
            self.maxConcurrency = maxConcurrency
        }

        /// Headers the gateway itself sets: a backend's extra headers may not replace them.
        static let reservedHeaders: Set<String> = ["host", "content-length", "transfer-encoding", "connection", "upgrade",
                                                   "te", "trailer", "keep-alive", "proxy-connection", "x-request-id",
                                                   "traceparent", "content-type"]

        static func read(_ section: ConfigReader) throws(ConfigurationError) -> BackendSettings {
            try section.allow(["url", "weight", "max_concurrency", "api_key_env", "api_key_file", "headers", "tls"])
            guard let url = try section.string("url") else { throw ConfigurationError(key: section.key("url"), problem: "is required") }
            var settings = BackendSettings(url: url, weight: try section.int("weight", 1...1_000) ?? 1,
                                           maxConcurrency: try section.int("max_concurrency", 1...1_000_000))
            settings.apiKeyEnv = try section.string("api_key_env")
            settings.apiKeyFile = try section.string("api_key_file")
            if settings.apiKeyEnv != nil, settings.apiKeyFile != nil {
                throw ConfigurationError(key: section.key("api_key_file"), problem: "give api_key_env or api_key_file, not both")
            }
            if let headers = try section.mapping("headers") {
                for name in headers.values.keys.sorted() {
                    let lower = name.lowercased()
                    guard !name.isEmpty, name.utf8.allSatisfy(Self.isTokenByte), !Self.reservedHeaders.contains(lower) else {
                        throw ConfigurationError(key: headers.key(name), problem: "is not a header name a backend request may carry")
                    }
                    guard let value = try headers.string(name), value.utf8.allSatisfy({ $0 == 0x09 || (0x20...0x7E).contains($0) }) else {
                        throw ConfigurationError(key: headers.key(name), problem: "must be a single-line string")
                    }
                    if lower == "authorization", settings.apiKeyEnv != nil || settings.apiKeyFile != nil {
                        throw ConfigurationError(key: headers.key(name), problem: "the API key already sets authorization")
                    }
                    settings.headers.append((lower, value))
                }
            }
            if let tls = try section.mapping("tls") {
                try tls.allow(["ca_file", "cert_file", "key_file"])
                let settingsTLS = BackendTLS(caFile: try tls.string("ca_file"), certFile: try tls.string("cert_file"),
                                             keyFile: try tls.string("key_file"))
                guard (settingsTLS.certFile == nil) == (settingsTLS.keyFile == nil) else {
                    throw ConfigurationError(key: tls.key("key_file"), problem: "cert_file and key_file go together")
                }
                settings.tls = settingsTLS
            }
            return settings
        }

        private static func isTokenByte(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }

        /// Reads the API key from the environment or its file (secrets never come from YAML).
        mutating func readAPIKey(_ environment: [String: String], key: String) throws(ConfigurationError) {
            if let name = apiKeyEnv {
                guard let value = environment[name], !value.isEmpty else {
                    throw ConfigurationError(key: "\(key).api_key_env", problem: "names \(name), which is not set")
                }
                apiKey = value
            } else if let path = apiKeyFile {
                guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                      !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                    throw ConfigurationError(key: "\(key).api_key_file", problem: "cannot read a key from \(path)")
                }
                apiKey = text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            if let apiKey, !apiKey.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) {
                throw ConfigurationError(key: "\(key).api_key_env", problem: "the key must be visible ASCII")
            }
        }

        /// The live backend: its headers and its TLS context (files read now).
        func makeBackend(key: String) throws(ConfigurationError) -> Backend {
            let headers = (apiKey.map { [("authorization", "Bearer \($0)")] } ?? []) + self.headers
            do {
                return try Backend(url: url, weight: weight, maxConcurrency: maxConcurrency, headers: headers,
                                   tls: try tls.map { try Self.context($0, key: key) },
                                   tlsFiles: tls.map { .init(caFile: $0.caFile, certFile: $0.certFile, keyFile: $0.keyFile) })
            } catch let error as ConfigurationError {
                throw error
            } catch {
                throw ConfigurationError(key: "\(key).url", problem: "\(error)")
            }
        }

        private static func context(_ tls: BackendTLS, key: String) throws -> NIOSSLContext {
            var configuration = TLSConfiguration.makeClientConfiguration()
            do {
                if let ca = tls.caFile {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
                }
                if let cert = tls.certFile, let keyFile = tls.keyFile {
                    configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
                }
                return try NIOSSLContext(configuration: configuration)
            } catch {
                throw ConfigurationError(key: "\(key).tls", problem: "cannot load the TLS files: \(error)")
            }
        }
    }
}
