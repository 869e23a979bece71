import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The admin web UI at `/admin/ui/`: three static files compiled into the binary
/// (`UI/index.html`, `UI/app.js`, `UI/app.css`) that call the admin API from the browser with
/// the signed-in token, and `settings.json`, which tells them how to sign in with OIDC.
///
/// Nothing here needs a token: the files hold no data, and every call they make goes through
/// the API's own authentication. The content security policy allows scripts and styles from
/// this origin only (no inline script, no framing), and calls to this origin and, with OIDC,
/// to the identity provider's.
public struct AdminUI: Sendable {
    /// The public client the browser signs in as, when OIDC is configured.
    public struct OIDCClient: Sendable, Equatable {
        public var issuer: String
        public var clientID: String
        public var scope: String

        public init(issuer: String, clientID: String, scope: String) {
            self.issuer = issuer
            self.clientID = clientID
            self.scope = scope
        }

        public init(_ settings: OIDCSettings) {
            self.init(issuer: settings.issuer, clientID: settings.uiClientID ?? settings.audience, scope: settings.uiScope)
        }
    }

    let oidc: OIDCClient?

    public init(oidc: OIDCClient?) {
        self.oidc = oidc
    }

    public func addRoutes(to router: Router<AdminRequestContext>) {
        let headers = securityHeaders
        // Also `/admin/ui`: the router does not tell the two apart, and the page names its
        // files by absolute path.
        router.get("/admin/ui/") { _, _ in
            Self.file(PackageResources.index_html, type: "text/html; charset=utf-8", headers: headers)
        }
        router.get("/admin/ui/app.js") { _, _ in
            Self.file(PackageResources.app_js, type: "text/javascript; charset=utf-8", headers: headers)
        }
        router.get("/admin/ui/app.css") { _, _ in
            Self.file(PackageResources.app_css, type: "text/css; charset=utf-8", headers: headers)
        }
        let settings = settingsJSON
        router.get("/admin/ui/settings.json") { _, _ in
            Self.file(settings, type: "application/json", headers: headers)
        }
    }

    /// `{"oidc": {"issuer", "client_id", "scope"}}`, or `{"oidc": null}` without OIDC.
    var settingsJSON: [UInt8] {
        let object: [String: Any] = ["oidc": oidc.map { ["issuer": $0.issuer, "client_id": $0.clientID, "scope": $0.scope] }
            ?? NSNull()]
        return [UInt8]((try? JSONSerialization.data(withJSONObject: object)) ?? Data("{\"oidc\":null}".utf8))
    }

    var securityHeaders: HTTPFields {
        let provider = oidc.flatMap { URL(string: $0.issuer) }.flatMap { url -> String? in
            guard let scheme = url.scheme, let host = url.host else { return nil }
            return "\(scheme)://\(host)" + (url.port.map { ":\($0)" } ?? "")
        }
        let connect = ["'self'", provider].compactMap { $0 }.joined(separator: " ")
        return [
            .contentSecurityPolicy: "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                + "connect-src \(connect); form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            .xContentTypeOptions: "nosniff",
            HTTPField.Name("x-frame-options")!: "DENY",
            HTTPField.Name("referrer-policy")!: "no-referrer",
            .cacheControl: "no-cache",
        ]
    }

    private static func file(_ bytes: [UInt8], type: String, headers: HTTPFields) -> Response {
        var fields = headers
        fields[.contentType] = type
        return Response(status: .ok, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
