// Streams a forced get_weather call with the Node SDK and prints the calls it accumulated.
import OpenAI from "openai";
const client = new OpenAI();
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Get current weather for a location",
      parameters: {
        type: "object",
        properties: { location: { type: "string", description: "City name" } },
        required: ["location"],
      },
    },
  },
];
const stream = client.chat.completions.stream({
  model: "gpt-4.1",
  messages: [{ role: "user", content: "What's the weather in Berlin?" }],
  tools,
  tool_choice: "required",
  parallel_tool_calls: false,
  seed: Number(process.env.SEED ?? 1),
});
const completion = await stream.finalChatCompletion();
console.log(JSON.stringify({
  finish_reason: completion.choices[0].finish_reason,
  tool_calls: completion.choices[0].message.tool_calls,
}));
