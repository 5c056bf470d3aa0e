// The Vercel AI SDK (ai + @ai-sdk/openai) on headrace's Chat Completions API, unchanged: a
// streamed reply with its usage, then a forced tool call. Prints what the SDK made of them.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";

const provider = createOpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: process.env.OPENAI_API_KEY,
});
const model = provider.chat("gpt-4.1"); // Chat Completions, not the Responses API

const streamed = streamText({
  model,
  prompt: "Name three colours.",
  maxOutputTokens: 16,
  temperature: 0,
});
const deltas = [];
for await (const delta of streamed.textStream) deltas.push(delta);

const called = await generateText({
  model,
  prompt: "What's the weather in Berlin?",
  tools: {
    get_weather: tool({
      description: "Get current weather for a location",
      inputSchema: jsonSchema({
        type: "object",
        properties: { location: { type: "string", description: "City name" } },
        required: ["location"],
      }),
    }),
  },
  toolChoice: { type: "tool", toolName: "get_weather" },
  seed: 1,
});

console.log(JSON.stringify({
  deltas,
  finishReason: await streamed.finishReason,
  usage: await streamed.usage,
  toolCalls: called.toolCalls.map((call) => ({ name: call.toolName, input: call.input })),
  toolFinishReason: called.finishReason,
}));
