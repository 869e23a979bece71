import Hummingbird
import Logging
import SluiceTenancy

/// Every admin answer is in the documented shape, whatever went wrong: a value the database
/// refuses is the caller's 400, a reference to a tenant that does not exist is 404, a
/// transient conflict is 503 (retry), and anything else is a logged 500 with a body.
struct AdminErrorMiddleware: RouterMiddleware {
    typealias Context = AdminRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            throw error
        } catch {
            switch TenancyError.classify(error) {
            case .notFound:
                throw AdminError.notFound
            case .invalidValue(let reason):
                throw AdminError.invalid("body", "a value is out of range or cannot be stored: \(reason)")
            case .conflict:
                throw AdminError(.serviceUnavailable, code: "conflict", message: "a concurrent change conflicted; retry")
            case nil:
                logger.error("admin request failed", metadata: ["method": "\(request.method)", "path": "\(request.uri.path)",
                                                                "error": "\(String(reflecting: error))"])
                throw AdminError(.internalServerError, code: "internal_error", message: "internal error")
            }
        }
    }
}
