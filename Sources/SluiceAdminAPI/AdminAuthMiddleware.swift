import Foundation
import Hummingbird

/// Puts the verified caller into the context, or answers 401 before any handler runs.
struct AdminAuthMiddleware: RouterMiddleware {
    typealias Context = AdminRequestContext
    let authenticator: AdminAuthenticator

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
              let caller = await authenticator.caller(bearer: String(header.dropFirst(7)))
        else {
            throw AdminError.unauthorized
        }
        var context = context
        context.caller = caller
        return try await next(request, context)
    }
}

/// What a caller needs for an operation on one tenant's resources.
enum AdminPermission {
    case read, manageKeys, managePlatform

    /// Tenant roles get 404 for another tenant's resources (its existence is not theirs to
    /// learn), 403 for an operation on their own tenant that their role does not allow.
    func check(_ caller: AdminCaller, tenant: UUID?) throws {
        if caller.role == .platformAdmin { return }
        if let tenant, caller.tenant != tenant { throw AdminError.notFound }
        switch self {
        case .read: return
        case .manageKeys: if caller.role == .tenantAdmin { return }
        case .managePlatform: break
        }
        throw AdminError.forbidden
    }
}

