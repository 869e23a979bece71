import Foundation

/// A private CA with a server certificate for 127.0.0.1 and a client certificate
/// (`scripts/private-ca.sh`), in a fresh temporary folder.
public struct PrivateCertificateAuthority: Sendable {
    public let directory: String

    public init() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-ca-\(UUID().uuidString.prefix(8))").path
        try await LocalRedisScripts.run(LocalRedisScripts.path("private-ca.sh"), [directory])
    }

    public var caFile: String { "\(directory)/ca.pem" }
    public var serverCertificate: String { "\(directory)/server.pem" }
    public var serverKey: String { "\(directory)/server.key" }
    public var clientCertificate: String { "\(directory)/client.pem" }
    public var clientKey: String { "\(directory)/client.key" }

    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
