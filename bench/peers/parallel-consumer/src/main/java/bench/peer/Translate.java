package bench.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.util.List;
import java.util.Locale;

/**
 * A CloudEvents structured-mode value to the Iterable requests consumer/translate.py sends
 * for a hybrid project in shared token ownership: users/update with every identifier,
 * registerDeviceToken and disableDevice with one identifier (userId first).
 */
final class Translate {
    /** One Iterable request: the path under /api/ and its JSON body. */
    record Call(String endpoint, byte[] body) {}

    private final ObjectMapper json;

    Translate(ObjectMapper json) {
        this.json = json;
    }

    /** The calls for one event; none for a value that is not one of the three events. */
    List<Call> calls(byte[] value) throws IOException {
        JsonNode event = json.readTree(value);
        JsonNode data = event.path("data");
        if (!data.isObject()) {
            return List.of();
        }
        return switch (event.path("type").asText()) {
            case "user.changed" -> List.of(call("users/update", userChanged(data)));
            case "device.registered" -> List.of(call("users/registerDeviceToken", registered(data)));
            case "push.permission.revoked" -> List.of(call("users/disableDevice", revoked(data)));
            default -> List.of();
        };
    }

    private Call call(String endpoint, ObjectNode body) throws IOException {
        return new Call(endpoint, json.writeValueAsBytes(body));
    }

    private ObjectNode userChanged(JsonNode data) {
        ObjectNode body = json.createObjectNode();
        String email = email(data, "email");
        String userId = text(data, "userId");
        String previous = email(data, "previousEmail");
        ObjectNode fields = data.path("dataFields").isObject()
                ? ((ObjectNode) data.get("dataFields")).deepCopy()
                : json.createObjectNode();
        if (email != null) {
            body.put("email", email);
        }
        if (userId != null) {
            body.put("userId", userId);
        }
        if (previous != null && !previous.equals(email)) {
            if (userId != null) { // keyed by userId; the new email travels in dataFields
                body.remove("email");
            } else { // identified by the old email, moved to the new one
                body.put("email", previous);
            }
            fields.put("email", email);
        }
        body.set("dataFields", fields);
        body.put("mergeNestedObjects", data.path("mergeNestedObjects").asBoolean(false));
        if (data.path("preferUserId").isBoolean()) {
            body.put("preferUserId", data.get("preferUserId").asBoolean());
        }
        return body;
    }

    private ObjectNode registered(JsonNode data) {
        JsonNode source = data.path("device");
        ObjectNode device = json.createObjectNode();
        device.put("token", source.path("token").asText());
        device.put("platform", source.path("platform").asText());
        device.put("applicationName", source.path("applicationName").asText());
        if (source.path("dataFields").isObject() && !source.get("dataFields").isEmpty()) {
            device.set("dataFields", source.get("dataFields").deepCopy());
        }
        ObjectNode body = identified(data);
        body.set("device", device);
        return body;
    }

    private ObjectNode revoked(JsonNode data) {
        ObjectNode body = json.createObjectNode();
        body.put("token", data.path("token").asText());
        body.setAll(identified(data));
        return body;
    }

    /** The one identifier a device call carries: userId, else email, else none. */
    private ObjectNode identified(JsonNode data) {
        ObjectNode body = json.createObjectNode();
        String userId = text(data, "userId");
        String email = email(data, "email");
        if (userId != null) {
            body.put("userId", userId);
        } else if (email != null) {
            body.put("email", email);
        }
        return body;
    }

    private static String text(JsonNode data, String field) {
        JsonNode value = data.get(field);
        return value != null && value.isTextual() ? value.asText() : null;
    }

    private static String email(JsonNode data, String field) {
        String value = text(data, field);
        return value == null ? null : value.strip().toLowerCase(Locale.ROOT);
    }
}
